"""How the DLQ tool prints what it found and did."""

from __future__ import annotations

from killstream_workstation.dlq.inspect import Inspection
from killstream_workstation.dlq.redrive import Progress, RedriveResult


def format_inspection(summary: Inspection, *, message_width: int = 80) -> str:
    header = (
        f"DLQ {summary.dlq_url}: ~{summary.approximate_visible} visible, "
        f"~{summary.approximate_in_flight} in flight; inspected {len(summary.messages)}"
        + (" (limit reached)" if summary.limited else "")
    )
    if not summary.messages:
        return header + "\nthe DLQ is empty"
    type_width = max(len("error_type"), *(len(t) for t in summary.counts))
    lines = [header, "", f"{'error_type':<{type_width}}  {'count':>7}"]
    lines += [f"{error_type:<{type_width}}  {count:>7}" for error_type, count in summary.counts.items()]
    lines += ["", f"{'killmail_id':>12}  {'error_type':<{type_width}}  {'receives':>8}  error_message"]
    for m in summary.messages:
        text = " ".join((m.error_message or "").split())
        if len(text) > message_width:
            text = text[: message_width - 1] + "…"
        killmail = "?" if m.killmail_id is None else str(m.killmail_id)
        receives = "?" if m.receive_count is None else str(m.receive_count)
        lines.append(f"{killmail:>12}  {m.error_type:<{type_width}}  {receives:>8}  {text}".rstrip())
    lines += ["", "receive counts include this inspection's own receive"]
    return "\n".join(lines)


def format_progress(progress: Progress) -> str:
    if progress.method == "move_task":
        if progress.to_move:
            percent = 100 * progress.moved // progress.to_move
            return f"move task {progress.status}: {progress.moved}/{progress.to_move} moved ({percent}%)"
        return f"move task {progress.status}: {progress.moved} moved"
    return f"redrive loop {progress.status}: {progress.moved} moved, {progress.failed} failed"


def format_result(result: RedriveResult) -> str:
    lines = []
    if result.fallback_reason:
        lines.append(f"fell back to the receive/send/delete loop: {result.fallback_reason}")
    if result.method == "move_task":
        total = "" if result.to_move is None else f" of {result.to_move}"
        lines.append(f"move task {result.task_handle} {result.status}: {result.moved}{total} moved")
        if result.failure_reason:
            lines.append(f"failure reason: {result.failure_reason}")
        return "\n".join(lines)
    kinds = ", ".join(f"{t} {n}" for t, n in result.by_error_type.items())
    verb = "would move" if result.dry_run else "moved"
    lines.append(f"{verb} {result.moved}" + (f" ({kinds})" if kinds else ""))
    if result.skipped:
        lines.append(f"left in the DLQ, not selected: {result.skipped}")
    if result.failed:
        lines.append(f"send failed, left in the DLQ: {result.failed}")
        lines += [f"  {failure}" for failure in result.failures]
    if result.not_deleted:
        lines.append(f"sent but not deleted from the DLQ (a later redrive sends them again): {result.not_deleted}")
    return "\n".join(lines)
