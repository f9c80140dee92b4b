"""The registry: models, versions, aliases, artifacts; the service is the only writer."""
