"""The server's routes, one router per concern; `server.app` assembles them.

State is the app's `ServerState` (`request.app.state.server`, the `State` dependency); who is
calling is the `Who` / `Limited` dependencies; errors are raised as `ApiError`.
"""
