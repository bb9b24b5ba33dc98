"""The embedded default job: PSKD end to end on the synthetic dataset, no download needed.

A skeleton teacher, a fusion teacher distilled from it, then the accelerometer-only student trained with ACS;
the report shows teachers and student side by side. Sized to finish in a few minutes on 2 CPU cores.
"""

SMALL_GCN = {"widths": [16, 32, 48], "strides": [1, 2, 2], "embedding_dim": 64}
TEACHER_TRAINING = {"epochs": 40, "batch_size": 32, "lr": 0.003}

DEMO_CONFIG = {
    "name": "demo",
    "method": "pskd",
    "data": {"dataset": "synthetic", "protocol": "cross_subject"},
    "preprocess": {"sensor_length": 128, "skeleton_length": 32},
    "student": {"name": "compact_cnn", "streams": ["accelerometer"]},
    "train": {"epochs": 120},
    "teachers": {
        "skeleton": {"name": "skeleton_gcn", "streams": ["skeleton"], "options": SMALL_GCN,
                     "train": TEACHER_TRAINING},
        "fusion": {
            "name": "fusion",
            "streams": ["skeleton", "accelerometer"],
            "distill_from": "skeleton",
            "options": {"embedding_dim": 64, "skeleton": SMALL_GCN, "inertial": {"embedding_dim": 64}},
            "train": TEACHER_TRAINING,
        },
    },
    "distill": {"progressive": "A", "terms": {"acs": {"mode": "hard"}}},
}
