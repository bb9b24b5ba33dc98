"""The student on a device: its model card, ONNX export and int8 quantisation, cost benchmark, live prediction.

Imports flow one way: deploy reads runs (pipeline, models, data) and nothing outside it imports deploy, except
the command line.
"""
