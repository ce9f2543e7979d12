"""Training, evaluation and the ``yolo4`` command line."""
