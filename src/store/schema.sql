-- The tables and columns of the jambonz schema that sbc-sidecar reads and writes
-- (spec section 12.2), with the types the jambonz api-server gives them. Other columns of the
-- real schema are left out: the sidecar never touches them, and `SELECT *` readers here only
-- use the columns below. Loaded by the tests and by `make run`.

CREATE TABLE IF NOT EXISTS webhooks (
  webhook_sid CHAR(36) NOT NULL UNIQUE,
  url VARCHAR(1024) NOT NULL,
  method ENUM('GET','POST') NOT NULL DEFAULT 'POST',
  username VARCHAR(255),
  password VARCHAR(255),
  PRIMARY KEY (webhook_sid)
);

CREATE TABLE IF NOT EXISTS service_providers (
  service_provider_sid CHAR(36) NOT NULL UNIQUE,
  name VARCHAR(64) NOT NULL UNIQUE,
  root_domain VARCHAR(128) UNIQUE,
  registration_hook_sid CHAR(36),
  PRIMARY KEY (service_provider_sid)
);

CREATE TABLE IF NOT EXISTS accounts (
  account_sid CHAR(36) NOT NULL UNIQUE,
  name VARCHAR(64) NOT NULL,
  sip_realm VARCHAR(132) UNIQUE,
  service_provider_sid CHAR(36) NOT NULL,
  registration_hook_sid CHAR(36),
  is_active BOOLEAN NOT NULL DEFAULT true,
  webhook_secret VARCHAR(36) NOT NULL,
  device_to_call_ratio INTEGER NOT NULL DEFAULT 5,
  PRIMARY KEY (account_sid)
);

CREATE TABLE IF NOT EXISTS products (
  product_sid CHAR(36) NOT NULL UNIQUE,
  name VARCHAR(32) NOT NULL,
  category ENUM('api_rate','voice_call_session','device') NOT NULL,
  PRIMARY KEY (product_sid)
);

CREATE TABLE IF NOT EXISTS account_subscriptions (
  account_subscription_sid CHAR(36) NOT NULL UNIQUE,
  account_sid CHAR(36) NOT NULL,
  pending BOOLEAN NOT NULL DEFAULT false,
  effective_start_date DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  effective_end_date DATETIME,
  PRIMARY KEY (account_subscription_sid)
);

CREATE TABLE IF NOT EXISTS account_products (
  account_product_sid CHAR(36) NOT NULL UNIQUE,
  account_subscription_sid CHAR(36) NOT NULL,
  product_sid CHAR(36) NOT NULL,
  quantity INTEGER NOT NULL,
  PRIMARY KEY (account_product_sid)
);

CREATE TABLE IF NOT EXISTS clients (
  client_sid CHAR(36) NOT NULL UNIQUE,
  account_sid CHAR(36) NOT NULL,
  is_active BOOLEAN NOT NULL DEFAULT 1,
  username VARCHAR(64),
  password VARCHAR(1024),
  allow_direct_app_calling BOOLEAN NOT NULL DEFAULT 1,
  allow_direct_queue_calling BOOLEAN NOT NULL DEFAULT 1,
  allow_direct_user_calling BOOLEAN NOT NULL DEFAULT 1,
  PRIMARY KEY (client_sid)
);

CREATE TABLE IF NOT EXISTS voip_carriers (
  voip_carrier_sid CHAR(36) NOT NULL UNIQUE,
  name VARCHAR(64) NOT NULL,
  account_sid CHAR(36),
  service_provider_sid CHAR(36),
  requires_register BOOLEAN NOT NULL DEFAULT false,
  register_username VARCHAR(64),
  register_sip_realm VARCHAR(64),
  register_password VARCHAR(64),
  is_active BOOLEAN NOT NULL DEFAULT true,
  register_from_user VARCHAR(128),
  register_from_domain VARCHAR(255),
  register_public_ip_in_contact BOOLEAN NOT NULL DEFAULT false,
  register_status VARCHAR(4096),
  outbound_sip_proxy VARCHAR(255),
  trunk_type ENUM('static_ip','auth','reg') NOT NULL DEFAULT 'static_ip',
  PRIMARY KEY (voip_carrier_sid)
);

CREATE TABLE IF NOT EXISTS sip_gateways (
  sip_gateway_sid CHAR(36),
  ipv4 VARCHAR(128) NOT NULL,
  netmask INTEGER NOT NULL DEFAULT 32,
  port INTEGER,
  inbound BOOLEAN NOT NULL,
  outbound BOOLEAN NOT NULL,
  voip_carrier_sid CHAR(36) NOT NULL,
  is_active BOOLEAN NOT NULL DEFAULT 1,
  protocol ENUM('udp','tcp','tls','tls/srtp') DEFAULT 'udp',
  send_options_ping BOOLEAN NOT NULL DEFAULT 0,
  use_sips_scheme BOOLEAN NOT NULL DEFAULT 0,
  PRIMARY KEY (sip_gateway_sid),
  INDEX voip_carrier_sid_idx (voip_carrier_sid)
);

CREATE TABLE IF NOT EXISTS sbc_addresses (
  sbc_address_sid CHAR(36) NOT NULL UNIQUE,
  ipv4 VARCHAR(255) NOT NULL,
  port INTEGER NOT NULL DEFAULT 5060,
  tls_port INTEGER,
  wss_port INTEGER,
  service_provider_sid CHAR(36),
  last_updated DATETIME,
  PRIMARY KEY (sbc_address_sid)
);

CREATE TABLE IF NOT EXISTS system_information (
  domain_name VARCHAR(255),
  sip_domain_name VARCHAR(255),
  monitoring_domain_name VARCHAR(255)
);
