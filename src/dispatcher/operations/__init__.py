"""The operations layer: what the API, the console and the local CLI do, written
once. One module per aggregate (endpoints, secrets, events, publishing, callbacks,
tenants and keys, event types). Each operation takes the Services, the Caller and
typed input; it validates, runs its transaction through store/, and returns typed
results or raises our errors (dispatcher.errors). Front ends only translate:
requests and forms into inputs, results into JSON and pages. Nothing here imports
aiohttp's web server, a front end or the engine."""
