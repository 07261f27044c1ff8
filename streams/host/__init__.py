"""The worker around the stages: the Faust app, its settings, topics, metrics and progress."""
