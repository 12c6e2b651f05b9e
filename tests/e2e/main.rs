//! End-to-end tests: the real `crm` binary, called over REST and gRPC as a user would.

mod support;

mod analytics;
mod analytics_customers;
mod analytics_derived;
mod analytics_replicas;
mod bench;
mod data_rights;
mod duplicates;
mod email;
mod events;
mod export;
mod grpc;
mod hardening;
mod history;
mod identity;
mod import;
mod notification;
mod pipeline;
mod postgres;
mod rest;
mod security;
mod traces;
