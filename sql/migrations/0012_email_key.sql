-- Users are found and kept unique by a key of their e-mail address, not lower(email).
-- lower() in the C locale folds ASCII only, so Äbc@example.com and äbc@example.com were
-- two accounts, and neither could log in as typed with an Ä (log-in folded in Python).
-- The key is computed in Python, in one place (eventbook/emails.py): the local part in
-- NFKC and case-folded, the domain as its IDNA A-label. The address as typed stays in
-- email, for mail and display.
ALTER TABLE users ADD COLUMN email_key text;

-- eventbook migrate fills in the key of every existing user right after this file, in
-- the same transaction (eventbook/db.py). A user whose address folds to a key another
-- user already has keeps none, and `eventbook check` lists it. NOT VALID leaves those
-- rows alone and holds every row written from now on.
ALTER TABLE users ADD CONSTRAINT users_email_key_present CHECK (email_key IS NOT NULL) NOT VALID;

DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (email_key);
