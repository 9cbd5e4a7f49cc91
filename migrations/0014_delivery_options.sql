-- Per-endpoint delivery options. Custom headers are an array of [name, value]
-- pairs in the order given. Receiver auth and client TLS each have a public view
-- (what the API shows: the auth type and its non-secret fields; the client
-- certificate's subject, issuer, expiry and fingerprint) and the whole option as
-- AES-GCM encrypted JSON, bound to the endpoint's id and its purpose. A view and
-- its secret are set and cleared together.
ALTER TABLE endpoints
    ADD COLUMN headers jsonb NOT NULL DEFAULT '[]'
        CONSTRAINT endpoints_headers_array CHECK (jsonb_typeof(headers) = 'array'),
    ADD COLUMN auth jsonb,
    ADD COLUMN auth_secret_enc bytea,
    ADD COLUMN tls jsonb,
    ADD COLUMN tls_secret_enc bytea,
    ADD CONSTRAINT endpoints_auth_whole CHECK ((auth IS NULL) = (auth_secret_enc IS NULL)),
    ADD CONSTRAINT endpoints_tls_whole CHECK ((tls IS NULL) = (tls_secret_enc IS NULL));
