"""The prompts a policy optimizer trains on: the workspace's train split (the default),
a prompt file, or a packaged review set. Eval-split prompts are never trained on, so
evaluation between rounds measures the policy on prompts it has not been optimized for."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from db.conversations import conversation_text, is_single_question
from db.models import Prompt
from db.prompts import PromptItem
from rlhf_train.errors import UserError
from rlhf_train.models.sampling import PromptInput
from rlhf_train.prompts.sources import BUILTIN_PROMPT_SETS, builtin_prompts, read_prompt_file
from rlhf_train.workspace import Workspace

WORKSPACE_PROMPTS = "workspace"


def prompt_input(item: PromptItem, chat: bool) -> PromptInput:
    """A prompt read from a file as a generation input, as db.prompts would store it: a
    conversation is chat, and one of a single user turn is that turn's text."""
    if isinstance(item, str):
        return PromptInput(item, chat)
    messages = list(item)
    if is_single_question(messages):
        return PromptInput(messages[0]["content"], True)
    return PromptInput(conversation_text(messages), True, messages)


def load_policy_prompts(
    workspace: Workspace, spec: str | None, chat: bool = False
) -> list[PromptInput]:
    """`spec`: None or "workspace", a .txt/.csv/.jsonl file, or imdb / rotten_tomatoes."""
    if spec is None or spec == WORKSPACE_PROMPTS:
        with workspace.sessions() as session:
            rows = session.execute(
                select(Prompt.text, Prompt.chat, Prompt.messages)
                .where(Prompt.split == "train")
                .order_by(Prompt.content_hash)
            ).all()
        if not rows:
            raise UserError(
                "The workspace has no train-split prompts to optimize on; import some with "
                "`rlhf prompts import` or `rlhf prompts builtin imdb`, or pass --prompts FILE."
            )
        return [PromptInput(text, is_chat, messages) for text, is_chat, messages in rows]
    if spec in BUILTIN_PROMPT_SETS:
        settings = workspace.config.prompts
        texts = builtin_prompts(spec, settings.n, settings.words, settings.seed)
        return [PromptInput(text, chat) for text in texts]
    return [prompt_input(item, chat) for item in read_prompt_file(Path(spec).expanduser())]
