"""The HTTP API: ``create_app(settings)``, its routes, middleware, auth, body reading, error mapping and start-up."""
