"""One module per task, each registering itself (service/registry.py). Adding a task is adding a module here."""
