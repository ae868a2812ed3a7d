"""HTTP plumbing shared by the server and the engine, each rule written once.

- `errors`: OpenAI-shaped error bodies; `ApiError` is raised, one set of handlers answers.
- `bearer`: the `Authorization: Bearer` parser.
- `body`: the body size limit (a middleware) and the depth-bounded JSON reader every door uses.
- `sdp`: the SDP offer reader (raw or multipart) and the offer check.
- `malformed`: uvicorn protocol classes whose own 400s (requests no app sees) are our JSON too.
"""
