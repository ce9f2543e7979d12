"""Losses, target assignment, augmentation and the trainer. Imports ``yolo4.detector`` and
``yolo4.core``; never ``yolo4.serving``."""
