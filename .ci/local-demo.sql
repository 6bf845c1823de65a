-- The demo account of `make run`: a service provider, an account whose SIP realm is
-- @demo_realm (no registration webhook, so the registrar checks the `clients` table) and one
-- client @demo_user. Loaded by .ci/local-demo.sh into the local database (sbc_local) only —
-- never part of the packaged schema (src/store/schema.sql). The loader sets the variables
-- first; @demo_password is the client's password already encrypted the way the jambonz
-- api-server stores it (JSON {"iv", "content"}, AES-256 with a key from ENCRYPTION_SECRET).
-- Idempotent: the rows have fixed ids and are updated in place when they exist.

INSERT INTO service_providers (service_provider_sid, name)
  VALUES ('5b1d0e5c-0000-4000-8000-0000000de301', 'sbc-sidecar demo')
  ON DUPLICATE KEY UPDATE name = VALUES(name);

INSERT INTO accounts (account_sid, name, sip_realm, service_provider_sid, registration_hook_sid,
                      is_active, webhook_secret)
  VALUES ('5b1d0e5c-0000-4000-8000-0000000de302', 'demo', @demo_realm,
          '5b1d0e5c-0000-4000-8000-0000000de301', NULL, 1, 'wh_secret_demo')
  ON DUPLICATE KEY UPDATE registration_hook_sid = NULL, is_active = 1;

-- The account that owns the realm (ours, or one that already had that realm).
SELECT account_sid INTO @demo_account FROM accounts WHERE sip_realm = @demo_realm;

DELETE FROM clients
  WHERE account_sid = @demo_account AND username = @demo_user
    AND client_sid <> '5b1d0e5c-0000-4000-8000-0000000de303';

INSERT INTO clients (client_sid, account_sid, is_active, username, password,
                     allow_direct_app_calling, allow_direct_queue_calling, allow_direct_user_calling)
  VALUES ('5b1d0e5c-0000-4000-8000-0000000de303', @demo_account, 1, @demo_user, @demo_password, 1, 1, 1)
  ON DUPLICATE KEY UPDATE account_sid = VALUES(account_sid), username = VALUES(username),
                          password = VALUES(password), is_active = 1;
