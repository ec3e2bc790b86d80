"""The record schema of a run directory: every record kind, who writes it, its fields and their units.

Stage: records (pure, standard library only, so agents running inside emulated
hosts can import it too). ``records.jsonl`` holds one JSON object per line, each
with a ``kind`` from :data:`SCHEMA`. Writers (agents, workload runners, the
runner) name kinds through the constants here; readers (verdicts, plots, export)
do the same; docs/report.md lists the same kinds, and a test fails when the two
disagree.

Units live in field names (``_s``, ``_ms``, ``_bytes``, ``_mbps``, ``_gbps``);
a field without a unit suffix is a count, a name or a flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RUN_SESSION = "run_session"
POINT = "point"
TRAIN_STEP = "train_step"
COLLECTIVE = "collective"
COLLECTIVE_RANK = "collective_rank"
REQUEST = "request"
SESSION = "session"
THROUGHPUT = "throughput"
TRAFFIC = "traffic"
MESSAGE = "message"
MESSAGE_SENT = "message_sent"
MESSAGE_RECV = "message_recv"
LINK_SAMPLE = "link_sample"
PREDICTION = "prediction"
FAULT = "fault"
AGENT_ERROR = "agent_error"
MPI_ALLREDUCE = "mpi_allreduce"

#: Fields the runner adds to every workload record of a point.
POINT_FIELDS = ("point_id", "placement", "group", "workload", "repetition")


@dataclass(frozen=True)
class RecordKind:
    """One kind of record: who writes it, when, and the fields every such record has."""

    name: str
    written: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    per_point: bool = True  # carries the POINT_FIELDS

    def missing(self, record: Mapping[str, Any]) -> list[str]:
        """The required fields ``record`` lacks (an empty list when it is complete)."""
        return [f for f in self.required if f not in record]


SCHEMA: dict[str, RecordKind] = {
    kind.name: kind
    for kind in (
        RecordKind(RUN_SESSION, "by the runner at each start or resume",
                   ("session", "resume", "points_todo", "points_skipped", "host", "kernel"), per_point=False),
        RecordKind(POINT, "by the runner, last, once per finished point",
                   ("point_id", "placement", "group", "sweep", "seed", "repetition", "status", "backend",
                    "duration_s", "plan"),
                   ("error", "backend_reason", "network", "link_health", "tcp"), per_point=False),
        RecordKind(TRAIN_STEP, "by each training rank, per step",
                   ("step", "step_time_s", "compute_time_s", "comm_time_s", "exposed_comm_s", "wan_bytes", "rank"),
                   ("sched_stall_s", "outer_sync", "t_start_s", "time_scale")),
        RecordKind(COLLECTIVE, "by `bench collective`, per message size",
                   ("algorithm", "size_bytes", "n_ranks", "time_s", "algbw_gbps", "busbw_gbps"),
                   ("predicted_time_s", "wan_bytes"), per_point=False),
        RecordKind(COLLECTIVE_RANK, "by each rank of a collective benchmark, per size",
                   ("size_bytes", "times_s"), per_point=False),
        RecordKind(REQUEST, "by an inference client, per LLM call",
                   ("request_id", "ok", "ttft_s", "tpot_s", "e2e_s", "t_send_s", "prompt_tokens", "output_tokens"),
                   ("t_sched_s", "sched_stall_s", "error", "server", "client", "new_connection", "t_send_monotonic_s",
                    "request_bytes")),
        RecordKind(SESSION, "by an inference client, per agentic or RAG session",
                   ("session_id", "e2e_s", "ok")),
        RecordKind(THROUGHPUT, "by a batch inference client, once",
                   ("duration_s", "requests", "output_tokens")),
        RecordKind(TRAFFIC, "by every inference agent, once: the HTTP messages and bytes it sent",
                   ("role", "host", "messages_sent", "bytes_sent")),
        RecordKind(MESSAGE, "by message-trace replay, per message",
                   ("seq", "src", "dst", "bytes")),
        RecordKind(MESSAGE_SENT, "by a message-trace replay agent, per message it sent",
                   ("seq", "src", "dst", "bytes")),
        RecordKind(MESSAGE_RECV, "by a message-trace replay agent, per message it received",
                   ("seq", "src", "dst", "bytes")),
        RecordKind(LINK_SAMPLE, "by the runner, every 0.5 s per WAN link while a point runs",
                   ("link", "t_s"),
                   ("a_to_b.bytes", "a_to_b.queue_bytes", "a_to_b.malformed", "b_to_a.bytes", "tc", "error",
                    "stats_age_s", "time_unix_s", "a_to_b.late_us_p50", "a_to_b.late_us_p99", "b_to_a.late_us_p99",
                    "loop.wake_late_us_p99", "loop.busy_us_max")),
        RecordKind(PREDICTION, "by the runner, per workload per point: the analytic model",
                   ("workload", "model_only"),
                   ("model_step_time_s", "model_ttft_s", "model_tpot_s", "model_verdict", "stop_km", "error")),
        RecordKind(FAULT, "by the runner, per fault event per WAN link of a point with faults",
                   ("event", "link", "fault_index", "at_s", "duration_s", "t_monotonic_s", "steps"),
                   ("outage_s", "delay_ms", "extra_delay_ms", "rate_mbps", "loss", "hold_s", "t_point_s",
                    "late_ms_max", "base_delay_ms", "base_rate_mbps", "time_scale", "error")),
        RecordKind(MPI_ALLREDUCE, "by an MPI rank of the Open MPI benchmark, per size",
                   ("size_bytes", "n_ranks", "times_s"), per_point=False),
        RecordKind(AGENT_ERROR, "by an agent that failed, before it exits",
                   ("error",), ("peer",)),
    )
}


def kind_of(record: Mapping[str, Any]) -> RecordKind | None:
    """The schema entry of a record, or None for a kind this version does not know."""
    return SCHEMA.get(str(record.get("kind")))
