-- Expire up to $1 due holds: how many, and the seconds until the next live hold runs out.
SELECT expired, next_in_seconds FROM expire_holds($1)
