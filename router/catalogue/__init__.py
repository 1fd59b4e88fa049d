"""The catalogue: the YAML file of models read into typed settings, written back
by imports, and merged with what the model sources hold."""
