"""A local stand-in for the Octopus Deploy server (octopus-facts §3): its REST API over plain
HTTP and its polling endpoint, as strict as the real server.

It serves the routes octoboot and the Tentacle CLI use (root, spaces, current user, server
certificate, environments, machines, workers and worker pools, the catalog machines refer
to, health tasks and their logs) with Octopus's JSON shapes, paging and error bodies, under
the real server's limits (StandInSettings: task cap, health task time, rate limit). Start it
with `python -m octoboot.sandbox.octopus_api` (`__main__`) or, in a test, as
`server.OctopusStandIn(...)` in a `with` block.

Modules, each building only on those listed before it:

    records    the shared vocabulary: Resource, the space, errors as 400/404/500, times, names
    catalog    machine policies, tenants, tag sets, proxies: their rules and shapes
    state      the model in one JSON file: environments, machines, workers, pools, tasks
    polling    the polling endpoint (Halibut-like, mutual TLS) polling Tentacles connect to
    call       one request as handlers see it; Octopus's error body; ApiError
    resources  resources as Octopus answers them (Links, link templates, task details)
    paging     list routes' filters and paging
    ratelimit  the per-API-key token bucket (429, Retry-After)
    health     health tasks: the queue under the task cap, checks over mutual TLS or polling
    routes     the router (method and path to handler) and the handlers
    server     the HTTP server and the stand-in's life; a request from socket to answer
    __main__   the command line
"""

# Where the command line reads its API key from (the sandbox sets it; never on argv).
API_KEY_ENV = "OCTOPUS_STANDIN_API_KEY"
