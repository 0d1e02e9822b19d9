"""`sae-pipeline alerts install`: the automations in `deployments/automations/` on the configured Prefect server.

Each file is a Prefect automation (what `prefect automation create --from-file` reads) whose actions send a
notification through a block. `install` creates or reuses the notification block (`--webhook URL`: a custom
webhook block that POSTs `{"subject": ..., "text": ...}`; `--block NAME`: an existing block such as a Slack,
Microsoft Teams or e-mail block), puts its id into every action, and replaces automations of the same name, so
running it twice leaves one copy of each.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from uuid import UUID

import yaml

AUTOMATIONS = Path(__file__).resolve().parents[1] / "deployments" / "automations"
WEBHOOK_BLOCK = "sae-pipeline-alerts"


def load_automations(folder: Path = AUTOMATIONS, block_document_id: UUID | None = None) -> list[dict]:
    """The automation files of `folder` (sorted), with `block_document_id` in every notification action."""
    automations = []
    for path in sorted(folder.glob("*.y*ml")):
        automation = yaml.safe_load(path.read_text())
        for action in automation.get("actions", []):
            if block_document_id is not None and "block_document_id" in action:
                action["block_document_id"] = str(block_document_id)
        automations.append(automation)
    return automations


def webhook_block_id(url: str, name: str = WEBHOOK_BLOCK) -> UUID:
    """Save (or overwrite) a custom webhook notification block that POSTs the subject and body as JSON to `url`."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name=name, url=url, method="POST", json_data={"subject": "{{subject}}", "text": "{{body}}"}
    )
    return block.save(name, overwrite=True)


def block_id(name: str) -> UUID:
    """The id of an existing notification block, by `TYPE-SLUG/NAME` (`slack-webhook/ops`) or by its name alone."""
    from prefect.blocks.core import Block

    if "/" in name:
        return Block.load(name)._block_document_id
    from prefect.client.orchestration import get_client

    async def find() -> UUID:
        async with get_client() as client:
            documents = await client.read_block_documents()
        matches = [document.id for document in documents if document.name == name]
        if len(matches) != 1:
            raise ValueError(f"{len(matches)} blocks are named {name!r}: give it as TYPE-SLUG/NAME")
        return matches[0]

    return asyncio.run(find())


async def _replace(automations: list[dict]) -> list[tuple[str, UUID]]:
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    created = []
    async with get_client() as client:
        for data in automations:
            automation = AutomationCore.model_validate(data)
            for existing in await client.read_automations_by_name(automation.name):
                await client.delete_automation(existing.id)
            created.append((automation.name, await client.create_automation(automation)))
    return created


def install(webhook: str | None = None, block: str | None = None, folder: Path = AUTOMATIONS) -> list[tuple[str, UUID]]:
    """Create the automations of `folder` on the configured Prefect API, notifying through a webhook block for
    `webhook` or the existing block `block`; return (name, id) of each."""
    if (webhook is None) == (block is None):
        raise ValueError("give either --webhook URL or --block NAME")
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ValueError(
                "PREFECT_API_URL is not set: automations live on a running Prefect server (the temporary server of "
                "a CLI run stops with it); start one (`prefect server start`) and point PREFECT_API_URL at it"
            )
    document_id = webhook_block_id(webhook) if webhook is not None else block_id(block)
    return asyncio.run(_replace(load_automations(folder, document_id)))


def _command_install(args: argparse.Namespace) -> None:
    for name, automation_id in install(args.webhook, args.block, Path(args.folder)):
        print(f"created automation {name!r} ({automation_id})")


def add_alerts_command(subparsers) -> None:
    """Add `alerts install` to the `sae-pipeline` parser's subcommands."""
    alerts = subparsers.add_parser("alerts", help="Prefect automations that notify on incidents, drift and more")
    commands = alerts.add_subparsers(dest="alerts_command", required=True)
    install_parser = commands.add_parser(
        "install", help="create the automations of deployments/automations on the server at PREFECT_API_URL"
    )
    target = install_parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook", help="POST the alerts as JSON {subject, text} to this URL")
    target.add_argument("--block", help="notify through this existing block (TYPE-SLUG/NAME, e.g. slack-webhook/ops)")
    install_parser.add_argument("--folder", default=str(AUTOMATIONS), help="folder of automation files (YAML)")
    install_parser.set_defaults(handler=_command_install)
