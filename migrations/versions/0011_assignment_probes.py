"""assignment functions that stay fast as annotators' histories grow

An annotator's earlier judgments were excluded with NOT EXISTS, which PostgreSQL turns
into an anti-join. For an annotator its statistics do not know yet (every new one, and
each one who has judged a lot since the last ANALYZE) it estimates a single judgment and
materializes them all, then compares every candidate pair against the whole list: with
800 judgments a claim took 3 ms and a gold draw 40 ms, and both grow with the history.
Written as a count of the annotator's judgments of that pair, the check cannot become a
join and is one probe of the (pair, annotator) unique index per candidate, whatever the
estimate. A gold draw also reads the unjudged gold pairs once instead of twice (a count,
then an offset into them), as db/judgments.py's Python path now does too.

The four functions also plan their statements once per connection (a generic plan)
instead of at every call: planning the claim cost about as much as running it, and a
plan made for a parameter's actual value is the one that trusts the stale estimate.
"""

import runpy
from pathlib import Path

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"

_PREVIOUS = runpy.run_path(str(Path(__file__).with_name("0010_assignment_functions.py")))

# "Not judged by this annotator" (db.judgments._NOT_JUDGED), per candidate pair p.
_NOT_JUDGED = (
    "(SELECT count(*) FROM judgments j WHERE j.pair_id = p.id AND j.annotator_id = p_annotator) = 0"
)
_OLD_NOT_JUDGED = """NOT EXISTS (SELECT 1 FROM judgments j
                                  WHERE j.pair_id = p.id AND j.annotator_id = p_annotator)"""

# prefloop_next_pair with the claim's check rewritten; everything else as in 0010.
NEXT_PAIR = _PREVIOUS["NEXT_PAIR"].replace(_OLD_NOT_JUDGED, _NOT_JUDGED)

# A gold pair of the round this annotator has not judged, the `pick` fraction along them
# by id; NULL if there is none (db.judgments._gold_pair).
GOLD_PAIR = f"""
CREATE OR REPLACE FUNCTION prefloop_gold_pair(
    p_annotator integer, p_round integer, p_pick double precision
) RETURNS integer LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    unjudged integer[];
BEGIN
    SELECT array_agg(p.id ORDER BY p.id) INTO unjudged FROM pairs p
    WHERE p.round_id = p_round AND p.gold_choice IS NOT NULL AND {_NOT_JUDGED};
    IF unjudged IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN unjudged[floor(p_pick * cardinality(unjudged))::integer + 1];
END
$fn$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    if _OLD_NOT_JUDGED not in _PREVIOUS["NEXT_PAIR"]:
        raise RuntimeError("0011: the claim of 0010's prefloop_next_pair was not found")
    op.execute(GOLD_PAIR)
    op.execute(NEXT_PAIR)
    for signature in _PREVIOUS["SIGNATURES"]:
        op.execute(f"ALTER FUNCTION {signature} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_PREVIOUS["GOLD_PAIR"])
    op.execute(_PREVIOUS["NEXT_PAIR"])
    for signature in _PREVIOUS["SIGNATURES"]:
        op.execute(f"ALTER FUNCTION {signature} RESET plan_cache_mode")
