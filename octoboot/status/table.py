"""status' report: a RunReport whose table shows what `status` found per machine
(reachable, version, service, the three thumbprints, Octopus Id, subscriptions when any
machine polls, health and drift). Only how it is shown: the rows are the run's."""

from __future__ import annotations

from octoboot.report import RunReport, one_line, short_thumbprint, table_text
from octoboot.status.steps import (
    DRIFT,
    HEALTH,
    HOST_SUBSCRIPTION,
    HOST_THUMBPRINT,
    OCTOPUS_SUBSCRIPTION,
    OCTOPUS_THUMBPRINT,
    REACHABLE,
    SERVICE,
    STORE_THUMBPRINT,
    VERSION,
)


class StatusReport(RunReport):
    """A RunReport whose table shows what `status` found."""

    def table(self) -> str:
        # Polling machines' subscription ids, on the host and in Octopus, when there are any.
        polling = any(HOST_SUBSCRIPTION in r.facts or OCTOPUS_SUBSCRIPTION in r.facts
                      for r in self.results)  # fmt: skip
        rows = []
        for r in self.results:
            facts = r.facts
            rows.append(
                (
                    r.machine,
                    r.environment,
                    r.state,
                    facts.get(REACHABLE, ""),
                    facts.get(VERSION, ""),
                    facts.get(SERVICE, ""),
                    short_thumbprint(facts.get(HOST_THUMBPRINT)),
                    short_thumbprint(facts.get(STORE_THUMBPRINT)),
                    r.octopus_id or "",
                    short_thumbprint(facts.get(OCTOPUS_THUMBPRINT)),
                    *(
                        (
                            short_subscription(facts.get(HOST_SUBSCRIPTION)),
                            short_subscription(facts.get(OCTOPUS_SUBSCRIPTION)),
                        )
                        if polling
                        else ()
                    ),
                    facts.get(HEALTH, ""),
                    # A machine failed for another reason than drift (e.g. refused login)
                    # shows that reason instead.
                    one_line(facts.get(DRIFT) or r.reason, 60),
                )
            )
        headers = ["machine", "environment", "state", "reachable", "version", "service",
                   "host thumbprint", "store thumbprint", "octopus id", "octopus thumbprint",
                   *(("host subscription", "octopus subscription") if polling else ()),
                   "health", "drift"]  # fmt: skip
        return "\n".join([table_text(rows, headers), "", *self.totals()])


def short_subscription(uri: str | None) -> str:
    """poll://abcdefgh…/ for poll://abcdefghijklmnopqrst/ (the JSON report has it whole)."""
    if not uri:
        return ""
    prefix = "poll://"
    rest = uri[len(prefix) :] if uri.startswith(prefix) else uri
    return f"{prefix}{rest[:8]}…/" if len(rest.rstrip("/")) > 8 else uri
