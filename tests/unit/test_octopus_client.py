"""OctopusClient without a server: retries, paging and error mapping over httpx.MockTransport.
(The sandbox tests talk to the Octopus stand-in over real HTTP.)"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from octoboot import octopus
from octoboot.errors import ConfigError
from octoboot.octopus import (
    NotOctopus,
    OctopusAuthError,
    OctopusClient,
    OctopusError,
    OctopusRateLimited,
    OctopusUnavailable,
    OctopusValidationError,
    health_status,
)
from octoboot.ratelimit import DEFAULT_RETRY_AFTER, MAX_CONCURRENT_CALLS, api_budget
from octoboot.settings import API_KEY_VARIABLE

URL = "https://octopus.example.com"
KEY = "API-UNITTESTKEY0000000000000"

Handler = Callable[[httpx.Request], httpx.Response]


class Clock:
    """octopus.py's `time`: sleeping moves the clock on at once and is written down."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(octopus, "time", fake)
    return fake


class Recorder:
    """The requests a client sent, answered by handler."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def client_for(handler: Handler, **options) -> tuple[OctopusClient, Recorder]:
    recorder = Recorder(handler)
    options = {"retry_seconds": 10.0, "key_hint": API_KEY_VARIABLE, **options}
    client = OctopusClient(URL, KEY, transport=httpx.MockTransport(recorder), **options)
    return client, recorder


def answers(*responses: httpx.Response | Exception) -> Handler:
    """A handler that answers with each response in turn (an exception is raised)."""
    pending = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        answer = pending.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handler


# --- retries ---------------------------------------------------------------------------------


def test_a_read_is_retried_through_5xx_with_back_off(clock):
    client, sent = client_for(
        answers(httpx.Response(503), httpx.Response(502), httpx.Response(504),
                httpx.Response(200, json={"Id": "Machines-1"}))
    )  # fmt: skip
    assert client.request("GET", "/api/Spaces-1/machines/Machines-1") == {"Id": "Machines-1"}
    assert len(sent.requests) == 4
    assert clock.slept == [0.5, 1.0, 2.0]


def test_a_read_is_retried_through_network_errors(clock):
    client, sent = client_for(
        answers(httpx.ConnectError("refused"), httpx.ReadTimeout("slow"),
                httpx.Response(200, json=[]))
    )  # fmt: skip
    assert client.request("GET", "/api/Spaces-1/machines/all") == []
    assert len(sent.requests) == 3


def test_retries_stop_at_the_retry_budget(clock):
    client, sent = client_for(lambda request: httpx.Response(503, text="restarting"))
    with pytest.raises(OctopusUnavailable) as err:
        client.request("GET", "/api/tasks/ServerTasks-1")
    assert str(err.value) == (
        f"Octopus at {URL} failed: GET /api/tasks/ServerTasks-1 answered 503 (text/plain)"
    )
    # 0.5 + 1 + 2 + 4 s, and the next 5 s would pass the 10 s budget
    assert clock.slept == [0.5, 1.0, 2.0, 4.0] and len(sent.requests) == 5

    clock.slept.clear()
    client, sent = client_for(answers(*[httpx.ConnectError("refused")] * 9), retry_seconds=2)
    with pytest.raises(OctopusUnavailable) as err:
        client.request("GET", "/api")
    assert len(sent.requests) == 3 and clock.slept == [0.5, 1.0]
    assert str(err.value) == (
        f"Octopus at {URL} did not answer: refused (is it up and reachable from here? is the "
        "URL right?)"
    )


def test_an_octopus_that_does_not_answer_names_the_setting_its_url_came_from(clock):
    client, _ = client_for(
        answers(httpx.ConnectError("[Errno 111] Connection refused")),
        retry_seconds=0,
        url_hint="url under [octopus] in machines/qa.toml",
    )
    with pytest.raises(OctopusUnavailable) as err:
        client.request("GET", "/api")
    assert str(err.value) == (
        f"Octopus at {URL} did not answer: [Errno 111] Connection refused (is it up and "
        "reachable from here? the URL is url under [octopus] in machines/qa.toml)"
    )


def test_other_errors_are_not_retried(clock):
    for status in (400, 401, 404, 500):
        client, sent = client_for(lambda request, status=status: httpx.Response(status))
        with pytest.raises(OctopusError):
            client.request("GET", "/api/Spaces-1/machines/Machines-9")
        assert len(sent.requests) == 1, status
    assert clock.slept == []


def test_a_create_that_cannot_have_arrived_is_sent_again(clock):
    client, sent = client_for(
        answers(httpx.ConnectError("refused"), httpx.Response(201, json={"Id": "Machines-2"}))
    )
    assert client.request("POST", "/api/Spaces-1/machines", json={"Name": "web01"}) == {
        "Id": "Machines-2"
    }
    assert [r.method for r in sent.requests] == ["POST", "POST"]


# --- a rate-limited API ------------------------------------------------------------------------


def test_a_429_is_waited_out_as_retry_after_says_and_counted_as_waiting_for_the_api(clock):
    in_7_s = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=7), usegmt=True)
    client, sent = client_for(
        answers(httpx.Response(429, headers={"Retry-After": "3"}),
                httpx.Response(429, headers={"Retry-After": in_7_s}),
                httpx.Response(429),
                httpx.Response(201, json={"Id": "Machines-1"}))
    )  # fmt: skip
    with api_budget(time.monotonic() + 60) as budget:
        created = client.request("POST", "/api/Spaces-1/machines", json={"Name": "web01"})
    assert created == {"Id": "Machines-1"}
    # a 429 was not processed, so even a create is sent again
    assert [r.method for r in sent.requests] == ["POST"] * 4
    assert clock.slept[0] == 3.0
    assert 5.0 <= clock.slept[1] <= 7.0  # the HTTP date, counted from now
    assert clock.slept[2] == DEFAULT_RETRY_AFTER  # no Retry-After: the C# client's default
    assert budget.waited == pytest.approx(sum(clock.slept))


def test_a_429_asking_for_longer_than_the_deadline_leaves_fails_at_once(clock):
    client, sent = client_for(lambda request: httpx.Response(429, headers={"Retry-After": "60"}))
    with api_budget(time.monotonic() + 3), pytest.raises(OctopusRateLimited) as err:
        client.request("GET", "/api/Spaces-1/machines/all")
    assert len(sent.requests) == 1 and clock.slept == []
    assert str(err.value) == (
        f"GET /api/Spaces-1/machines/all: Octopus at {URL} is rate-limiting this API key (429) "
        "and asks to wait 60 s, more than the machine's deadline leaves: run fewer machines at "
        "once (--workers, --batch), or ask for a higher rate limit for the key"
    )


def test_no_more_than_max_concurrent_calls_reach_octopus_at_once():
    in_flight, peak, lock = 0, 0, threading.Lock()

    def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.1)  # an answer that takes a while, so that callers pile up
        with lock:
            in_flight -= 1
        return httpx.Response(200, json=[])

    client, sent = client_for(slow)
    callers = [
        threading.Thread(target=client.request, args=("GET", f"/api/Spaces-1/machines/{n}"))
        for n in range(3 * MAX_CONCURRENT_CALLS)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(30)
    assert len(sent.requests) == 3 * MAX_CONCURRENT_CALLS
    assert peak == MAX_CONCURRENT_CALLS


# --- error mapping ---------------------------------------------------------------------------


def error_of(response: httpx.Response, **options) -> OctopusError:
    client, _ = client_for(lambda request: response, **options)
    with pytest.raises(OctopusError) as err:
        client.request("GET", "/api/Spaces-1/machines")
    return err.value


def test_a_refused_key_is_a_configuration_error_naming_where_the_key_comes_from():
    error = error_of(
        httpx.Response(401, json={"ErrorMessage": "You must be logged in"}),
        key_hint="OCTOPUS_API_KEY_FILE",
    )
    assert isinstance(error, OctopusAuthError) and isinstance(error, ConfigError)
    assert error.exit_code == 2
    assert str(error) == (
        f"Octopus at {URL} refused the API key (401: You must be logged in): "
        "set a valid key in OCTOPUS_API_KEY_FILE"
    )
    assert isinstance(error_of(httpx.Response(403, json={})), OctopusAuthError)
    assert KEY not in str(error)


def test_validation_errors_carry_octopus_own_words():
    body = {
        "ErrorMessage": "There was a problem with your request.",
        "Errors": ["There was a problem with your request.", "A machine named web01 exists."],
    }
    for status in (400, 409):
        error = error_of(httpx.Response(status, json=body))
        assert type(error) is OctopusValidationError
        assert str(error) == (
            "There was a problem with your request.; A machine named web01 exists."
        )


def test_not_found_and_server_errors():
    missing = error_of(httpx.Response(404, json={"ErrorMessage": "Machines-9 not found"}))
    assert type(missing) is OctopusError and missing.exit_code == 3
    assert str(missing) == "GET /api/Spaces-1/machines: not found (404): Machines-9 not found"
    broken = error_of(httpx.Response(500, json={"ErrorMessage": "Internal Server Error"}))
    assert type(broken) is OctopusUnavailable
    assert str(broken) == f"Octopus at {URL} failed (500): Internal Server Error"
    page = error_of(httpx.Response(500, text="<html>down</html>"))
    assert type(page) is OctopusUnavailable  # a proxy saying Octopus behind it is down
    assert str(page) == (
        f"Octopus at {URL} failed: GET /api/Spaces-1/machines answered 500 (text/plain)"
    )


def test_an_answer_that_is_not_json_says_the_url_may_be_wrong():
    client, _ = client_for(
        lambda request: httpx.Response(200, text="<html>", headers={"content-type": "text/html"})
    )
    with pytest.raises(
        OctopusError, match=r"is not Octopus' API: GET /api answered 200 \(text/html\); the URL"
    ):
        client.request("GET", "/api")
    empty, _ = client_for(lambda request: httpx.Response(200))
    assert empty.request("DELETE", "/api/Spaces-1/machines/Machines-1") is None


def test_deleting_a_machine_already_gone_counts_as_deleted(clock):
    client, sent = client_for(route)
    client.connect(["QA"])
    client.delete_machine("Machines-404")
    assert sent.requests[-1].method == "DELETE"


# --- a small server: the space, environments and machines, paged ----------------------------

PAGE = 2
MACHINES = [
    {"Id": f"Machines-{i}", "Name": name, "EnvironmentIds": ["Environments-2"]}
    for i, name in enumerate(["web01", "web010", "WEB01 ", "db01", "web01-old"], start=1)
]


def page(items: list[dict], path: str, skip: int) -> dict:
    """Octopus' collection shape: Items, and a Page.Next link while more follow."""
    links = {}
    if skip + PAGE < len(items):
        links["Page.Next"] = f"{path}?skip={skip + PAGE}&take={PAGE}"
    return {"Items": items[skip : skip + PAGE], "Links": links}


def route(request: httpx.Request) -> httpx.Response:
    assert request.headers["X-Octopus-ApiKey"] == KEY
    assert KEY not in str(request.url)
    path, params = request.url.path, request.url.params
    skip = int(params.get("skip", 0))
    if path == "/api":
        root = {"Application": "Octopus Deploy", "Links": {"Spaces": "/api/spaces"}}
        return httpx.Response(200, json=root)
    if path == "/api/spaces/all":
        spaces = [{"Id": "Spaces-1", "Name": "Default", "IsDefault": True},
                  {"Id": "Spaces-2", "Name": "Ops", "IsDefault": False}]  # fmt: skip
        return httpx.Response(200, json=spaces)
    if path == "/api/configuration/certificates/certificate-global":
        return httpx.Response(200, json={"Thumbprint": "ab" * 20})
    if path.endswith("/environments"):
        # Like the real server, a loose filter: a partial match is returned as well.
        environments = [{"Id": "Environments-1", "Name": "QA-old"},
                        {"Id": "Environments-3", "Name": "Production"},
                        {"Id": "Environments-2", "Name": "qa"}]  # fmt: skip
        return httpx.Response(200, json=page(environments, path, skip))
    if path.endswith("/machines"):
        return httpx.Response(200, json=page(MACHINES, path, skip))
    if path.endswith("/machines/Machines-404") and request.method == "DELETE":
        return httpx.Response(404, json={"ErrorMessage": "not found"})
    return httpx.Response(404, json={"ErrorMessage": f"no route {path}"})


def test_connect_finds_the_space_the_thumbprint_and_environments_across_pages():
    client, sent = client_for(route)
    assert client.connect(["QA"]) == {"QA": "Environments-2"}
    assert client.server_thumbprint() == "AB" * 20
    paths = [r.url.path for r in sent.requests]
    assert paths == ["/api/spaces/all",
                     "/api/configuration/certificates/certificate-global",
                     "/api/Spaces-1/environments", "/api/Spaces-1/environments"]  # fmt: skip
    assert sent.requests[2].url.params["name"] == "QA"
    # looked up once per run
    client.environment_id("QA")
    assert len(sent.requests) == 4


def test_a_refused_key_is_told_from_a_server_that_is_not_octopus():
    # The spaces are asked for first; when they are refused, the root document shows that
    # this is Octopus, so the refusal is what to report.
    def refusing(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/spaces/all":
            return httpx.Response(401, json={"ErrorMessage": "You must be logged in"})
        return route(request)

    client, sent = client_for(refusing)
    with pytest.raises(OctopusAuthError, match="refused the API key"):
        client.connect(["QA"])
    assert [r.url.path for r in sent.requests] == ["/api/spaces/all", "/api"]
    page, _ = client_for(lambda request: httpx.Response(401, text="<html>log in</html>"))
    with pytest.raises(NotOctopus, match="is not Octopus' API: GET /api answered 401"):
        page.connect(["QA"])


def test_a_space_or_environment_that_does_not_exist_is_one_line():
    client, _ = client_for(route, space="Nope")
    with pytest.raises(ConfigError, match='has no space named "Nope" \\(spaces: Default, Ops\\)'):
        client.connect(["QA"])
    client, _ = client_for(route)
    with pytest.raises(ConfigError, match='has no environment "Staging": create it in Octopus'):
        client.connect(["Staging"])


def test_machines_named_reads_every_page_and_keeps_exact_names_only():
    client, sent = client_for(route, space="ops")
    client.connect([])
    named = client.machines_named("Web01")
    # the server's filter is loose; the name is compared exactly, without case or blanks
    assert [m["Id"] for m in named] == ["Machines-1", "Machines-3"]
    reads = [r for r in sent.requests if r.url.path == "/api/Spaces-2/machines"]
    assert [r.url.params.get("skip") for r in reads] == [None, "2", "4"]


def test_paging_stops_at_an_empty_page_even_if_it_links_another():
    def endless(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api":
            return httpx.Response(
                200, json={"Application": "Octopus Deploy", "Links": {}}
            )  # before spaces: no space prefix
        if request.url.path.startswith("/api/configuration/"):
            return httpx.Response(200, json={"Thumbprint": "AB" * 20})
        return httpx.Response(200, json={"Items": [], "Links": {"Page.Next": "/api/machines"}})

    client, sent = client_for(endless)
    client.connect([])
    assert client.machines_named("web01") == []
    assert [r.url.path for r in sent.requests] == [
        "/api/spaces/all",  # not found before spaces: the root document says so
        "/api",
        "/api/configuration/certificates/certificate-global",
        "/api/machines",
    ]


# --- worker pools ---------------------------------------------------------------------------

POOLS = [
    {"Id": "WorkerPools-1", "Name": "Default Worker Pool", "Slug": "default-worker-pool",
     "WorkerPoolType": "StaticWorkerPool"},
    {"Id": "WorkerPools-2", "Name": "Linux workers", "Slug": "linux-workers",
     "WorkerPoolType": "StaticWorkerPool"},
    {"Id": "WorkerPools-3", "Name": "Hosted Ubuntu", "Slug": "hosted-ubuntu",
     "WorkerPoolType": "DynamicWorkerPool", "WorkerType": "UbuntuDefault"},
]  # fmt: skip


def pools_client() -> tuple[OctopusClient, Recorder]:
    client, recorder = client_for(lambda request: httpx.Response(200, json=POOLS))
    client._space_prefix = "/api/Spaces-1"
    return client, recorder


def test_worker_pools_are_found_by_name_slug_or_id_and_read_once():
    client, recorder = pools_client()
    assert client.worker_pool_ids(["linux workers", "default-worker-pool", "workerpools-2"]) == {
        "linux workers": "WorkerPools-2",
        "default-worker-pool": "WorkerPools-1",
        "workerpools-2": "WorkerPools-2",
    }
    assert client.worker_pool_ids(["Linux workers"]) == {"Linux workers": "WorkerPools-2"}
    assert [r.url.path for r in recorder.requests] == ["/api/Spaces-1/workerpools/all"]


def test_a_missing_worker_pool_is_one_line_naming_it_and_the_known_ones():
    client, _ = pools_client()
    with pytest.raises(ConfigError) as caught:
        client.worker_pool_ids(["Linux workers", "Windows"])
    assert "no worker pool named, with slug or Id 'Windows'" in str(caught.value)
    assert "(pools: Default Worker Pool, Linux workers, Hosted Ubuntu)" in str(caught.value)


def test_a_dynamic_worker_pool_is_refused_in_one_line():
    client, _ = pools_client()
    with pytest.raises(ConfigError) as caught:
        client.worker_pool_ids(["Hosted Ubuntu"])
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert '"Hosted Ubuntu" (WorkerPools-3) is a DynamicWorkerPool' in message
    assert "static pool" in message


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("web01", "WEB01", True),
        (" Web01\t", "web01", True),  # Octopus.Client trims before comparing
        ("web01", "web02", False),
        ("web 01", "web01", False),  # only the ends are trimmed
    ],
)
def test_name_key_is_the_octopus_same_name_rule(a: str, b: str, same: bool) -> None:
    assert (octopus.name_key(a) == octopus.name_key(b)) is same


@pytest.mark.parametrize("record", [{}, {"HealthStatus": None}, {"HealthStatus": ""}])
def test_a_missing_or_null_health_status_reads_as_unknown(record):
    assert health_status(record) == "Unknown"
    assert health_status({"HealthStatus": "Unavailable"}) == "Unavailable"
