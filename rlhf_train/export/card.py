"""The dataset card (README.md) of an export, rendered from its manifest."""

from __future__ import annotations

from typing import Any

COUNT_LABELS = {
    "pairs": "pairs in the selected rounds",
    "judgments": "judgments on them",
    "skips": "skips (not votes)",
    "ranking_tasks": "ranking tasks (K responses each) among the pairs",
    "rankings": "rankings on them",
    "ranking_pairs": "votes the rankings gave (K(K-1)/2 pairs each)",
    "annotators_excluded": "annotators excluded for gold accuracy",
    "votes_from_excluded_annotators": "votes of excluded annotators",
    "votes_used": "votes used",
    "pairs_without_votes": "pairs without votes",
    "gold_pairs_excluded": "gold pairs excluded",
    "pairs_below_min_votes": "pairs below --min-votes",
    "pairs_below_min_agreement": "pairs below --min-agreement",
    "pairs_both_bad": "pairs whose majority was both bad",
    "pairs_tied": "pairs tied (no majority, or a majority for tie)",
    "pairs_tied_dropped": "tied pairs dropped (--ties drop)",
    "pairs_exported": "pairs exported",
    "rows_train": "rows in train",
    "rows_test": "rows in test",
    "prompts_train": "prompts in train",
    "prompts_test": "prompts in test",
}


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def render_card(manifest: dict[str, Any]) -> str:
    options = manifest["options"]
    agreement = manifest["agreement"]
    lines = [
        "# Preference dataset",
        "",
        f"Exported by prefloop from `{manifest['database']}`, rounds "
        f"{', '.join(map(str, manifest['rounds']))}. Content hash `{manifest['content_hash']}`.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_from_disk, load_dataset",
        'dataset = load_from_disk("hf")  # if exported with --format hf',
        'dataset = load_dataset("json", data_files={"train": "data/train.jsonl", '
        '"test": "data/test.jsonl"})',
        "```",
        "",
        "## Columns",
        "",
        "TRL's preference format with an explicit prompt"
        + (
            " (conversational: message lists with user and assistant roles)."
            if options["conversational"]
            else "."
        ),
        "",
        "- `prompt`, `chosen`, `rejected`: the prompt and the preferred and other response.",
        "- `margin`: agreement x mean strength (1 slightly, 2 clearly, 3 much better; a missing "
        "strength counts as 1) of the votes in the majority; 0 for the two rows of a tied pair.",
        "- `agreement`: the share of the pair's votes that went to the outcome.",
        "- `n_votes`: votes on the pair (skips are not votes).",
        "- `round`, `chosen_model`, `rejected_model`, `pair_id`: where the row came from.",
        "",
        "Train and test are split by prompt: no prompt is in both, and a prompt's split depends "
        f"only on its text and the seed ({options['seed']}), so it stays put as rounds are added.",
        "",
        "## Counts",
        "",
        "| step | count |",
        "|---|---:|",
    ]
    for key, value in manifest["counts"].items():
        lines.append(f"| {COUNT_LABELS.get(key, key)} | {value} |")
    lines += [
        "",
        "## Agreement",
        "",
        f"- pairwise agreement: {_number(agreement['pairwise_agreement'])}",
        f"- Krippendorff's alpha (nominal): {_number(agreement['krippendorff_alpha'])}",
        "",
        "| annotator | votes | agreement with majority | gold votes | gold accuracy | excluded |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in agreement["annotators"]:
        lines.append(
            f"| {row['name']} | {row['votes']} | {_number(row['agreement_with_majority'])} | "
            f"{row['gold_votes']} | {_number(row['gold_accuracy'])} | "
            f"{'yes' if row['excluded'] else ''} |"
        )
    lines += ["", "## Models", "", "| model | responses |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in manifest["models"].items()]
    lines += ["", "## Options", ""]
    lines += [f"- `{name}`: {value}" for name, value in sorted(options.items())]
    return "\n".join(lines) + "\n"


RAW_COUNT_LABELS = {
    "judgments": "judgments (one row each)",
    "choice_A": "choice A",
    "choice_B": "choice B",
    "choice_tie": "choice tie",
    "choice_both_bad": "choice both bad",
    "choice_skip": "skips",
    "choice_ranking": "rankings (ranking tasks, one order each)",
    "pairs_judged": "pairs judged",
    "prompts": "prompts",
    "annotators": "annotators",
    "gold_judgments": "judgments on gold pairs",
    "rows_train": "rows in train",
}


def render_raw_card(manifest: dict[str, Any]) -> str:
    """The card of `rlhf export --raw`: what each column holds and what the pseudonyms are."""
    options = manifest["options"]
    text = (
        "a list of messages ({role, content}; the prompt as one user message, each "
        "response as one assistant message)"
        if options["conversational"]
        else "plain text"
    )
    lines = [
        "# Raw votes",
        "",
        f"Exported by prefloop from `{manifest['database']}`, rounds "
        f"{', '.join(map(str, manifest['rounds']))}. Content hash `{manifest['content_hash']}`.",
        "",
        "One row per judgment, nothing aggregated or filtered: skips, ties, both-bad votes and "
        "the votes on gold pairs are rows like the others. There is one split, `train`, with "
        "every row; it is not split by prompt.",
        "",
        "## Loading",
        "",
        "```python",
        "from datasets import load_from_disk, load_dataset",
        'votes = load_from_disk("hf")["train"]  # if exported with --format hf',
        'votes = load_dataset("json", data_files="data/train.jsonl")["train"]',
        "```",
        "",
        "## Columns",
        "",
        "- `pair_id`, `round`, `strategy`: the pair judged, its round, and how its two "
        "responses were chosen (new_vs_previous, arena, random, ...).",
        f"- `prompt`, `response_a`, `response_b`: the prompt and the pair's two responses, as "
        f"{text}.",
        "- `policy_a`, `policy_b`: the policy that wrote each response.",
        "- `annotator`: a pseudonym (see below).",
        "- `choice`: A, B, tie, both_bad or skip, always in terms of `response_a`/`response_b`, "
        "whichever side each was shown on.",
        "- `strength`: 1 slightly, 2 clearly, 3 much better; null where not given.",
        "- `flags`: the flags the annotator raised (unsafe, broken, off_topic), possibly none.",
        "- `left_sample`: which response (A or B) was shown on the left.",
        "- `ms_spent`: milliseconds the annotator spent on the pair.",
        "- `time`: when the judgment was last submitted, ISO 8601 in UTC.",
        "- `gold_choice`: the known answer of a gold (attention-check) pair, null otherwise.",
        "- `ranking`, `display_order`, `responses_shown`: for a ranking task (choice "
        "`ranking`), the order chosen as groups of sample ids best first (ties share a "
        "group), the sample ids in the order shown, and their texts; null otherwise.",
        "",
        "## Pseudonyms",
        "",
        "An annotator is `annotator-` and the first 12 hex digits of sha256(salt + the "
        "annotator's id), with a salt drawn at random for this export and stored nowhere. "
        "The pseudonym is stable within this export only: the same annotator has another "
        "pseudonym in every other export, and not even the database can map it back. (Two "
        "exports of the same rounds still hold the same votes, so matching rows by pair and "
        "time would match their pseudonyms too; share one export per audience.) Written "
        "rationales are left out, since free text can name its author.",
        "",
        "Because of the salt, two raw exports of the same database differ in the "
        "`annotator` column and in the content hash.",
        "",
        "## Counts",
        "",
        "| count | value |",
        "|---|---:|",
    ]
    lines += [
        f"| {RAW_COUNT_LABELS.get(key, key)} | {value} |"
        for key, value in manifest["counts"].items()
    ]
    lines += ["", "## Models", "", "| policy | responses |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in manifest["models"].items()]
    return "\n".join(lines) + "\n"
