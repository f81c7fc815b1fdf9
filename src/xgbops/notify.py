"""Announce results by email and on the desktop: pipeline builds, training, data checks, alerts.

A :class:`Notification` is plain data (a subject, titled sections of lines, links); :func:`render`
turns it into a plain-text body with an HTML alternative, and :func:`send` delivers it on every
channel the settings allow. Email goes through :mod:`smtplib` to the server in
``settings.notify`` (skipped, with the reason, while no host is set); the desktop bubble uses
``desktop-notifier`` where a desktop exists. A failing desktop never fails the caller: the
email is the notification of record, so only an email that could not be sent makes
:attr:`DeliveryReport.email_failed` true (``xgbops notify`` then exits non-zero, and Jenkins
falls back to its own mailer).

The summary readers know the JSON that other steps write (``xgbops train --result-file``,
``reports/data-check.json``) by their keys only: this module imports no other xgbops stage.
"""

from __future__ import annotations

import html
import json
import os
import platform
import smtplib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Literal

import structlog

from xgbops import XgbopsError
from xgbops.champion import is_server_uri
from xgbops.config import NotifySettings, Settings

log = structlog.get_logger(__name__)

SUBJECT_PREFIX = "[xgbops]"
#: Build results that mean something went wrong: the desktop bubble is shown as critical.
BAD_STATUSES = frozenset({"FAILURE", "FAILED", "UNSTABLE", "ABORTED", "ERROR"})
#: Lines of the body shown in a desktop bubble (they are small).
DESKTOP_LINES = 4

DeliveryStatus = Literal["sent", "skipped", "failed"]


class NotifyError(XgbopsError):
    """An email could not be sent; the message names the server and the reason."""


@dataclass(frozen=True)
class Section:
    """A titled group of body lines, e.g. the key figures of one summary file."""

    title: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """A labelled URL shown at the end of the message."""

    label: str
    url: str


@dataclass(frozen=True)
class Notification:
    """What to announce; channel-neutral, so email and desktop say the same thing."""

    subject: str
    sections: tuple[Section, ...] = ()
    links: tuple[Link, ...] = ()
    #: Something went wrong: shown as critical on the desktop.
    urgent: bool = False

    @classmethod
    def of_lines(
        cls,
        subject: str,
        lines: Iterable[str],
        *,
        title: str = "",
        links: Iterable[Link] = (),
        urgent: bool = False,
    ) -> Notification:
        """A notification with one section, for alerts (e.g. drift) that are a few lines.

        Args:
            subject: the subject line; prefixed with ``[xgbops]`` when it is not already.
            lines: the body lines.
            title: the section title (none by default).
            links: links shown after the body.
            urgent: show it as critical on the desktop.

        Returns:
            The notification.
        """
        return cls(
            subject=_prefixed(subject),
            sections=(Section(title, tuple(lines)),),
            links=tuple(links),
            urgent=urgent,
        )

    def text_lines(self) -> list[str]:
        """The plain-text body, line by line."""
        lines: list[str] = []
        for section in self.sections:
            if section.title:
                lines.append(section.title)
            lines.extend(f"  {line}" if section.title else line for line in section.lines)
            lines.append("")
        if self.links:
            lines.append("Links")
            lines.extend(f"  {link.label}: {link.url}" for link in self.links)
        return lines


@dataclass(frozen=True)
class Delivery:
    """What happened on one channel, and why."""

    channel: str
    status: DeliveryStatus
    detail: str

    def line(self) -> str:
        """One line for people, e.g. ``email: skipped (no SMTP host configured ...)``."""
        return f"{self.channel}: {self.status} ({self.detail})"


@dataclass(frozen=True)
class DeliveryReport:
    """The outcome of :func:`send` on each channel."""

    email: Delivery
    desktop: Delivery

    @property
    def email_failed(self) -> bool:
        """True when SMTP was configured and the email could not be sent."""
        return self.email.status == "failed"

    @property
    def channels_used(self) -> list[str]:
        """The channels the notification went out on."""
        return [d.channel for d in (self.email, self.desktop) if d.status == "sent"]

    def lines(self) -> list[str]:
        """One line per channel."""
        return [self.email.line(), self.desktop.line()]


def format_duration(seconds: float) -> str:
    """Human duration: ``45s``, ``2m 13s``, ``1h 02m 05s``.

    Args:
        seconds: a non-negative duration.

    Returns:
        The duration, rounded to the second.
    """
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def job_subject(job: str, status: str, duration: float, build: str | None = None) -> str:
    """The subject of a build notification: ``[xgbops] training #12: SUCCESS in 2m 13s``."""
    number = f" #{build}" if build else ""
    return f"{SUBJECT_PREFIX} {job}{number}: {status.upper()} in {format_duration(duration)}"


def job_notification(
    job: str,
    status: str,
    duration: float,
    *,
    url: str | None = None,
    build: str | None = None,
    summaries: Sequence[Path] = (),
    mlflow_uri: str | None = None,
) -> Notification:
    """The notification of a pipeline/job result, with the key figures of its summary files.

    Args:
        job: the job name, e.g. ``training``.
        status: the build result (``SUCCESS``, ``FAILURE``, ``UNSTABLE``, ``ABORTED``...).
        duration: how long the build took, in seconds.
        url: the build's page (Jenkins ``BUILD_URL``).
        build: the build number, shown as ``#12``.
        summaries: JSON files to summarise; a missing or unreadable one is named, not fatal
            (the step that writes it may be the one that failed).
        mlflow_uri: the MLflow tracking URI; linked when it is an http(s) server.

    Returns:
        The notification.
    """
    sections = [summary_section(path) for path in summaries]
    links = []
    if url:
        links.append(Link("Build", url))
    if is_server_uri(mlflow_uri):
        links.append(Link("MLflow", mlflow_uri))
    return Notification(
        subject=job_subject(job, status, duration, build),
        sections=tuple(sections),
        links=tuple(links),
        urgent=status.upper() in BAD_STATUSES,
    )


def summary_section(path: Path) -> Section:
    """Key figures of one summary file: a training result, a data check, or any JSON object.

    Args:
        path: the JSON file.

    Returns:
        A section titled after the kind of file and its path; its lines say what is wrong
        when the file is missing or is not JSON.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Section(f"Summary ({path})", ("not found: the step that writes it did not run",))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Section(f"Summary ({path})", (f"unreadable: {exc}",))
    if isinstance(data, dict) and {"run_id", "model_name", "metrics"} <= data.keys():
        return Section(f"Training result ({path})", tuple(training_lines(data)))
    if isinstance(data, dict) and {"promoted", "challenger_version", "metric"} <= data.keys():
        return Section(f"Promotion decision ({path})", tuple(_decision_lines(data)))
    if isinstance(data, dict) and {"passed", "issues"} <= data.keys():
        return Section(f"Data check ({path})", tuple(data_check_lines(data)))
    return Section(f"Summary ({path})", tuple(key_value_lines(data)))


def training_lines(result: Mapping[str, Any]) -> list[str]:
    """Key figures of a training result (``TrainingResult.to_dict()``): model, holdout
    metrics, and whether the champion changed, with both scores.

    Args:
        result: the training result as written by ``xgbops train --result-file``.

    Returns:
        Lines for people.
    """
    lines = [f"model: {result['model_name']} v{result.get('version', '?')}"]
    if result.get("run_id"):
        lines.append(f"MLflow run: {result['run_id']}")
    baselines = result.get("baselines") or {}
    for name, value in (result.get("metrics") or {}).items():
        beside = ", ".join(
            f"{baseline} {_number(scores.get(name))}" for baseline, scores in baselines.items()
        )
        lines.append(
            f"holdout {name}: {_number(value)}" + (f" (baselines: {beside})" if beside else "")
        )
    if result.get("best_iteration") is not None:
        lines.append(f"best iteration: {result['best_iteration']}")
    if result.get("duration_seconds") is not None:
        lines.append(f"training time: {format_duration(float(result['duration_seconds']))}")
    lines.extend(_decision_lines(result.get("decision")))
    return lines


def _decision_lines(decision: Mapping[str, Any] | None) -> list[str]:
    if not decision:
        return ["champion: not decided by this run (see the promotion decision, if any)"]
    metric = decision.get("metric", "score")
    challenger = (
        f"challenger v{decision.get('challenger_version')} "
        f"{metric}={_number(decision.get('challenger_score'))}"
    )
    if decision.get("champion_version") is None:
        champion = "champion: none before this run"
    else:
        champion = (
            f"champion v{decision['champion_version']} "
            f"{metric}={_number(decision.get('champion_score'))}"
        )
    verdict = "yes" if decision.get("promoted") else "no"
    lines = [f"champion changed: {verdict}", f"{challenger} vs {champion}"]
    for name, value in (decision.get("baselines") or {}).items():
        lines.append(f"{name} baseline {metric}={_number(value)}")
    if decision.get("reason"):
        lines.append(f"reason: {decision['reason']}")
    return lines


def data_check_lines(report: Mapping[str, Any]) -> list[str]:
    """Key figures of a data-check report (``reports/data-check.json``).

    Args:
        report: the report as written by ``xgbops data-check``.

    Returns:
        The verdict, the size of the data, then one line per failed check and warning.
    """
    issues = report.get("issues") or []
    verdict = "PASSED" if report.get("passed") else f"FAILED ({len(issues)} failed check(s))"
    lines = [f"data check: {verdict}"]
    if report.get("dataset"):
        lines.append(f"dataset: {report['dataset']} ({report.get('path', '?')})")
    if report.get("rows") is not None:
        lines.append(f"rows: {report['rows']}, columns: {report.get('columns', '?')}")
    for issue in issues:
        where = f"column {issue['column']!r}" if issue.get("column") else "dataset"
        lines.append(
            f"failed [{issue.get('check', '?')}] {where}: {issue.get('reason', '')} "
            f"({issue.get('count', 0)} case(s))"
        )
    lines.extend(f"warning: {warning}" for warning in report.get("warnings") or [])
    return lines


def key_value_lines(data: Any, prefix: str = "") -> list[str]:
    """Any JSON value as ``key: value`` lines, nested keys joined with dots.

    Args:
        data: a decoded JSON value.
        prefix: the key of ``data`` in its parent.

    Returns:
        One line per scalar (lists are shown inline).
    """
    if isinstance(data, dict):
        lines: list[str] = []
        for key, value in data.items():
            lines.extend(key_value_lines(value, f"{prefix}.{key}" if prefix else str(key)))
        return lines
    if isinstance(data, str):
        value = data
    elif isinstance(data, float):
        value = _number(data)
    else:  # numbers, booleans, null and lists, as JSON
        value = json.dumps(data, default=str)
    return [f"{prefix}: {value}" if prefix else value]


def render(notification: Notification) -> tuple[str, str]:
    """The notification as a plain-text body and an HTML body (same content).

    Args:
        notification: what to say.

    Returns:
        ``(text, html)``.
    """
    text = "\n".join([notification.subject, "", *notification.text_lines()]).rstrip() + "\n"
    esc = html.escape
    parts = [f"<h2>{esc(notification.subject)}</h2>"]
    for section in notification.sections:
        if section.title:
            parts.append(f"<h3>{esc(section.title)}</h3>")
        items = "".join(f"<li>{esc(line)}</li>" for line in section.lines)
        parts.append(f"<ul>{items}</ul>")
    if notification.links:
        items = "".join(
            f'<li>{esc(link.label)}: <a href="{esc(link.url, quote=True)}">{esc(link.url)}</a></li>'
            for link in notification.links
        )
        parts.append(f"<h3>Links</h3><ul>{items}</ul>")
    body = "\n".join(parts)
    return (
        text,
        f'<!DOCTYPE html>\n<html><body style="font-family: sans-serif">\n{body}\n</body></html>\n',
    )


def build_message(
    notification: Notification, sender: str, recipients: Sequence[str]
) -> EmailMessage:
    """A MIME email (plain text with an HTML alternative) for ``notification``.

    Args:
        notification: what to say.
        sender: the From address.
        recipients: the To addresses.

    Returns:
        The message, ready for :meth:`smtplib.SMTP.send_message`.
    """
    text, html_body = render(notification)
    message = EmailMessage()
    message["Subject"] = notification.subject
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text)
    message.add_alternative(html_body, subtype="html")
    return message


def send_email(settings: NotifySettings, message: EmailMessage) -> None:
    """Send ``message`` through the SMTP server in ``settings`` (STARTTLS and login if set).

    Args:
        settings: the notify settings; ``smtp_host`` must be set.
        message: the message; its To header names the recipients.

    Raises:
        NotifyError: the server cannot be reached, refuses the login or the message.
    """
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(
            settings.smtp_host or "", settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password
                smtp.login(settings.smtp_user, password.get_secret_value() if password else "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(
            f"SMTP server {where} refused the login of {settings.smtp_user!r}: "
            f"{exc.smtp_code} {_smtp_text(exc.smtp_error)}"
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise NotifyError(f"SMTP server {where} does not support {exc}") from exc
    except smtplib.SMTPResponseException as exc:
        raise NotifyError(
            f"SMTP server {where} refused the message: "
            f"{exc.smtp_code} {_smtp_text(exc.smtp_error)}"
        ) from exc
    except smtplib.SMTPException as exc:
        raise NotifyError(f"SMTP server {where}: {exc}") from exc
    except OSError as exc:  # refused, unreachable, timed out, TLS failure
        raise NotifyError(f"cannot reach SMTP server {where}: {exc}") from exc


def desktop_availability(environ: Mapping[str, str], system: str) -> tuple[bool, str]:
    """Whether this machine can show a desktop notification, and why (not).

    On Linux the notification service is reached over the D-Bus session bus, which only a
    desktop session provides (``DBUS_SESSION_BUS_ADDRESS``); CI agents and containers have
    none. macOS and Windows always have a notification centre.

    Args:
        environ: the process environment.
        system: :func:`platform.system` (``Linux``, ``Darwin``, ``Windows``...).

    Returns:
        ``(available, reason)``.
    """
    if system == "Linux":
        if environ.get("DBUS_SESSION_BUS_ADDRESS"):
            return True, "D-Bus session bus"
        return False, "no desktop session (DBUS_SESSION_BUS_ADDRESS is not set)"
    if system in ("Darwin", "Windows"):
        return True, f"{system} notification centre"
    return False, f"no desktop notification support on {system or 'this platform'}"


def send(settings: Settings, notification: Notification) -> DeliveryReport:
    """Deliver ``notification`` by email and on the desktop, as the settings allow.

    Never raises for a delivery problem: each channel's outcome is in the report, and each
    skip or failure is logged with its reason.

    Args:
        settings: the xgbops settings (``settings.notify`` is used).
        notification: what to say.

    Returns:
        What happened on each channel.
    """
    report = DeliveryReport(
        email=_deliver_email(settings.notify, notification),
        desktop=_deliver_desktop(settings.notify, notification),
    )
    log.info("notification delivered", subject=notification.subject, channels=report.channels_used)
    return report


def _deliver_email(settings: NotifySettings, notification: Notification) -> Delivery:
    if not settings.smtp_host:
        reason = "no SMTP host configured (XGBOPS_NOTIFY__SMTP_HOST)"
        log.info("email skipped", reason=reason)
        return Delivery("email", "skipped", reason)
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    if not settings.recipients:
        reason = f"SMTP server {where} is configured but no recipients (XGBOPS_NOTIFY__RECIPIENTS)"
        log.error("email failed", reason=reason)
        return Delivery("email", "failed", reason)
    try:
        send_email(settings, build_message(notification, settings.sender, settings.recipients))
    except NotifyError as exc:
        log.error("email failed", reason=str(exc))
        return Delivery("email", "failed", str(exc))
    return Delivery("email", "sent", f"to {', '.join(settings.recipients)} via {where}")


def _deliver_desktop(settings: NotifySettings, notification: Notification) -> Delivery:
    if not settings.desktop:
        return Delivery("desktop", "skipped", "disabled (XGBOPS_NOTIFY__DESKTOP=false)")
    available, reason = desktop_availability(os.environ, platform.system())
    if not available:
        log.info("desktop notification skipped", reason=reason)
        return Delivery("desktop", "skipped", reason)
    try:
        _show_desktop(notification)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        # Whatever the backend raises (D-Bus, permissions, missing service), the desktop is a
        # courtesy: report it and carry on.
        log.warning("desktop notification failed", reason=str(exc))
        return Delivery("desktop", "failed", f"{type(exc).__name__}: {exc}")
    return Delivery("desktop", "sent", reason)


def _show_desktop(notification: Notification) -> None:
    # Imported here: the D-Bus/Cocoa/WinRT backends load only when a desktop is present.
    from desktop_notifier import (  # pylint: disable=import-outside-toplevel
        DesktopNotifierSync,
        Urgency,
    )

    body = [line.strip() for line in notification.text_lines() if line.strip()]
    notifier = DesktopNotifierSync(app_name="xgbops")
    notifier.send(
        title=notification.subject,
        message="\n".join(body[:DESKTOP_LINES]),
        urgency=Urgency.Critical if notification.urgent else Urgency.Normal,
    )


def _prefixed(subject: str) -> str:
    return subject if subject.startswith(SUBJECT_PREFIX) else f"{SUBJECT_PREFIX} {subject}"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _smtp_text(error: bytes | str) -> str:
    return error.decode(errors="replace") if isinstance(error, bytes) else str(error)
