"""Documents generated from the code: docs/configuration.md and docs/asyncapi.yaml."""
