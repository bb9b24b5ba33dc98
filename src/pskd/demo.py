"""The embedded default job: the whole pipeline on the synthetic dataset, no download needed."""

DEMO_CONFIG = {
    "name": "demo",
    "data": {"dataset": "synthetic", "protocol": "cross_subject"},
    "preprocess": {"accelerometer_length": 128, "skeleton_length": 64},
    "student": {"name": "compact_cnn", "streams": ["accelerometer"]},
    "train": {"epochs": 120},
}
