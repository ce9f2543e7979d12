"""The bodies of the ``yolo4`` subcommands; ``yolo4.cli`` imports each only when it runs."""
