"""assignment in the database on PostgreSQL: next_pair and a first vote as two functions

db/judgments.py makes the same decisions in Python (SQLite, and PostgreSQL's "global"
locking); on PostgreSQL with row locks each submit and each next pair is one call here
instead of three and five statements, each a round trip with its client-side cost. The
statements are those of db/judgments.py, in the same order and under the same locks.
SQLite has no stored functions: nothing changes there.
"""

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"

# The annotator's next pair (db.judgments.next_pair): a held lease first, else for each
# open round a gold pair at the gold rate, an ordinary pair closest to done (SKIP LOCKED),
# a gold pair once none is left. The caller draws the side and the three random numbers,
# so the Python path and this one spend the same draws. No row: nothing left.
NEXT_PAIR = """
CREATE OR REPLACE FUNCTION prefloop_next_pair(
    p_annotator integer,
    p_now timestamp,
    p_expires timestamp,
    p_side varchar,
    p_gold_roll double precision,
    p_gold_pick double precision,
    p_fallback_pick double precision,
    p_tries integer
) RETURNS TABLE (
    assigned_pair integer,
    shown_left varchar,
    round_number integer,
    prompt_text text,
    text_a text,
    text_b text,
    round_guidelines text,
    round_kind varchar
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    held record;
    ended integer[] := '{}';
    chosen integer;
    side varchar := p_side;
    open_round record;
    passed integer[];
    tried integer;
BEGIN
    FOR held IN
        SELECT l.id, l.pair_id, l.left_sample,
               l.expires_at > p_now AS live,
               (r.status = 'open' AND NOT EXISTS (
                   SELECT 1 FROM judgments j
                   WHERE j.pair_id = l.pair_id AND j.annotator_id = p_annotator)) AS usable,
               (p.gold_choice IS NOT NULL OR p.judgment_count + (
                   SELECT count(e.id) FROM pair_leases e
                   WHERE e.pair_id = l.pair_id AND e.annotator_id <> p_annotator
                     AND e.expires_at > p_now AND e.id < l.id) < r.overlap) AS room
        FROM pair_leases l
        JOIN pairs p ON p.id = l.pair_id
        JOIN rounds r ON r.id = p.round_id
        WHERE l.annotator_id = p_annotator
        ORDER BY l.expires_at DESC, l.id DESC
    LOOP
        IF NOT held.live OR (held.usable AND NOT held.room) THEN
            ended := ended || held.id;
        ELSIF chosen IS NULL AND held.usable THEN
            chosen := held.pair_id;
            side := held.left_sample;
        END IF;
    END LOOP;
    IF cardinality(ended) > 0 THEN
        DELETE FROM pair_leases WHERE id = ANY (ended);
    END IF;
    IF chosen IS NOT NULL THEN
        UPDATE pair_leases SET expires_at = p_expires
        WHERE pair_id = chosen AND annotator_id = p_annotator;
    ELSE
        FOR open_round IN
            SELECT r.id, r.overlap, coalesce(r.gold_rate, 0.0) AS gold_rate
            FROM rounds r WHERE r.status = 'open' ORDER BY r.number
        LOOP
            IF p_gold_roll < open_round.gold_rate THEN
                chosen := prefloop_gold_pair(p_annotator, open_round.id, p_gold_pick);
                IF chosen IS NOT NULL
                   AND NOT prefloop_new_lease(chosen, p_annotator, p_now, p_expires, side) THEN
                    chosen := NULL;
                END IF;
                EXIT WHEN chosen IS NOT NULL;
            END IF;
            passed := '{}';
            tried := 0;
            WHILE tried < p_tries LOOP
                tried := tried + 1;
                SELECT p.id INTO chosen FROM pairs p
                WHERE p.round_id = open_round.id
                  AND p.judgment_count < open_round.overlap
                  AND p.gold_choice IS NULL
                  AND p.id <> ALL (passed)
                  AND NOT EXISTS (SELECT 1 FROM judgments j
                                  WHERE j.pair_id = p.id AND j.annotator_id = p_annotator)
                  AND NOT EXISTS (SELECT 1 FROM pair_leases l
                                  WHERE l.pair_id = p.id AND l.annotator_id = p_annotator)
                  AND p.judgment_count + (
                      SELECT count(l.id) FROM pair_leases l
                      WHERE l.pair_id = p.id AND l.annotator_id <> p_annotator
                        AND l.expires_at > p_now) < open_round.overlap
                ORDER BY p.round_id DESC, p.judgment_count DESC, p.id DESC
                LIMIT 1
                FOR NO KEY UPDATE SKIP LOCKED;
                EXIT WHEN chosen IS NULL;
                EXIT WHEN prefloop_new_lease(chosen, p_annotator, p_now, p_expires, side);
                passed := passed || chosen;
                chosen := NULL;
            END LOOP;
            IF chosen IS NULL THEN
                chosen := prefloop_gold_pair(p_annotator, open_round.id, p_fallback_pick);
                IF chosen IS NOT NULL
                   AND NOT prefloop_new_lease(chosen, p_annotator, p_now, p_expires, side) THEN
                    chosen := NULL;
                END IF;
            END IF;
            EXIT WHEN chosen IS NOT NULL;
        END LOOP;
    END IF;
    IF chosen IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT p.id, side, r.number, pr.text, sa.text, sb.text, r.guidelines, r.kind
        FROM pairs p
        JOIN rounds r ON r.id = p.round_id
        JOIN prompts pr ON pr.id = p.prompt_id
        JOIN samples sa ON sa.id = p.sample_a_id
        JOIN samples sb ON sb.id = p.sample_b_id
        WHERE p.id = chosen;
END
$fn$
"""

# A gold pair of the round this annotator has not judged, the `pick` fraction along them
# by id; NULL if there is none (db.judgments._gold_pair).
GOLD_PAIR = """
CREATE OR REPLACE FUNCTION prefloop_gold_pair(
    p_annotator integer, p_round integer, p_pick double precision
) RETURNS integer LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    total integer;
    found integer;
BEGIN
    SELECT count(*) INTO total FROM pairs p
    WHERE p.round_id = p_round AND p.gold_choice IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM judgments j
                      WHERE j.pair_id = p.id AND j.annotator_id = p_annotator);
    IF total = 0 THEN
        RETURN NULL;
    END IF;
    SELECT p.id INTO found FROM pairs p
    WHERE p.round_id = p_round AND p.gold_choice IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM judgments j
                      WHERE j.pair_id = p.id AND j.annotator_id = p_annotator)
    ORDER BY p.id
    OFFSET floor(p_pick * total)::integer LIMIT 1;
    RETURN found;
END
$fn$
"""

# Lease the pair if it still has room for this annotator, checked by the insert itself
# (db.judgments._new_lease); false if not, or if they hold a lease row on it already.
NEW_LEASE = """
CREATE OR REPLACE FUNCTION prefloop_new_lease(
    p_pair integer, p_annotator integer, p_now timestamp, p_expires timestamp, p_side varchar
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    lease integer;
BEGIN
    INSERT INTO pair_leases (pair_id, annotator_id, expires_at, left_sample)
    SELECT p.id, p_annotator, p_expires, p_side
    FROM pairs p JOIN rounds r ON r.id = p.round_id
    WHERE p.id = p_pair AND r.status = 'open'
      AND NOT EXISTS (SELECT 1 FROM judgments j
                      WHERE j.pair_id = p.id AND j.annotator_id = p_annotator)
      AND (p.gold_choice IS NOT NULL OR p.judgment_count + (
          SELECT count(l.id) FROM pair_leases l
          WHERE l.pair_id = p.id AND l.annotator_id <> p_annotator
            AND l.expires_at > p_now) < r.overlap)
    ON CONFLICT (pair_id, annotator_id) DO NOTHING
    RETURNING id INTO lease;
    RETURN lease IS NOT NULL;
END
$fn$
"""

# A first judgment of a pair in an open pairwise round (db.judgments._record_first):
# 'recorded' with the judgment's id, its round, overlap and the change to the round's
# progress; 'filled' when the pair had no room (nothing is stored); 'other' when it is not
# that case (a resubmit, a ranking round, a closed round), for the caller to decide.
RECORD_VOTE = """
CREATE OR REPLACE FUNCTION prefloop_record_vote(
    p_pair integer,
    p_annotator integer,
    p_created timestamp,
    p_choice varchar,
    p_left varchar,
    p_strength integer,
    p_rationale text,
    p_flags json,
    p_ms_spent integer
) RETURNS TABLE (
    outcome text, judgment integer, vote_round integer, vote_overlap integer, change integer
) LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    inserted integer;
    counted record;
BEGIN
    INSERT INTO judgments (pair_id, annotator_id, created_at, choice, left_sample, strength,
                           rationale, flags, ms_spent)
    SELECT p_pair, p_annotator, p_created, p_choice, p_left, p_strength, p_rationale,
           p_flags, p_ms_spent
    WHERE EXISTS (SELECT 1 FROM pairs p JOIN rounds r ON r.id = p.round_id
                  WHERE p.id = p_pair AND r.status = 'open' AND r.kind = 'pairwise')
    ON CONFLICT (pair_id, annotator_id) DO NOTHING
    RETURNING id INTO inserted;
    IF inserted IS NULL THEN
        RETURN QUERY SELECT 'other'::text, NULL::integer, NULL::integer, NULL::integer, 0;
        RETURN;
    END IF;
    IF p_choice = 'skip' THEN
        SELECT p.round_id AS round_id, r.overlap AS overlap, 0 AS change INTO counted
        FROM pairs p JOIN rounds r ON r.id = p.round_id WHERE p.id = p_pair;
    ELSE
        UPDATE pairs p SET judgment_count = p.judgment_count + 1
        FROM rounds r
        WHERE p.id = p_pair AND r.id = p.round_id
          AND (p.gold_choice IS NOT NULL OR p.judgment_count < r.overlap)
        RETURNING p.round_id AS round_id, r.overlap AS overlap,
                  CASE WHEN p.gold_choice IS NOT NULL THEN 0
                       ELSE least(p.judgment_count, r.overlap)
                            - least(p.judgment_count - 1, r.overlap) END AS change
        INTO counted;
        IF NOT FOUND THEN
            DELETE FROM judgments WHERE id = inserted;
            RETURN QUERY SELECT 'filled'::text, NULL::integer, NULL::integer, NULL::integer, 0;
            RETURN;
        END IF;
    END IF;
    DELETE FROM pair_leases WHERE pair_id = p_pair AND annotator_id = p_annotator;
    RETURN QUERY SELECT 'recorded'::text, inserted, counted.round_id, counted.overlap,
                        counted.change;
END
$fn$
"""

SIGNATURES = (
    "prefloop_next_pair(integer, timestamp, timestamp, varchar, double precision, "
    "double precision, double precision, integer)",
    "prefloop_gold_pair(integer, integer, double precision)",
    "prefloop_new_lease(integer, integer, timestamp, timestamp, varchar)",
    "prefloop_record_vote(integer, integer, timestamp, varchar, varchar, integer, text, json, "
    "integer)",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for definition in (GOLD_PAIR, NEW_LEASE, NEXT_PAIR, RECORD_VOTE):
        op.execute(definition)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for signature in SIGNATURES:
        op.execute(f"DROP FUNCTION IF EXISTS {signature}")
