"""The engine's HTTP and WebSocket routes, one router per concern; `engine.app` assembles them.

State is the app's `Engine`, reached through `request.app.state.engine` (the `EngineDep`
dependency); errors are raised as `ApiError` and answered by the app's handlers.
"""
