"""One router per resource of the HTTP API (see attune_actors.api.app.ROUTERS)."""
