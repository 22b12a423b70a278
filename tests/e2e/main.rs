//! End-to-end tests: the real `mailroom` binary on free loopback ports, driven by real clients
//! (Python's smtplib, poplib and nntplib, raw SMTP and POP3 clients, Python sockets for the
//! RemoteManager, and Debian's clients in `.ci/run`: swaks, fetchmail, mpop, msmtp, expect +
//! telnet, tin, slrn, sinntp).

mod bounce;
mod cli;
mod crash;
mod database;
mod database_admin;
mod database_crash;
mod database_faults;
mod database_james;
mod database_large;
mod database_nodes;
mod database_pool;
mod dbfile;
mod delivery;
mod fetchmail;
mod fetchmail_dovecot;
mod first_hour;
mod full_disk;
mod harness;
mod interop;
mod limits;
mod lists;
mod mailets;
mod matchers;
mod metrics;
mod nntp;
mod nntp_clients;
mod nntp_tls;
mod outcome_log;
mod pg;
mod pop3;
mod power_loss;
mod power_loss_more;
mod power_loss_remote;
mod processor_tree;
mod queue;
mod recipients;
mod remote_delivery;
mod remote_manager;
mod scan;
mod smtp_auth;
mod smtp_input;
mod store_copy;
mod tls;
mod tls_auth;
mod tls_auth_peers;
mod tls_peers;
mod virtual_tables;
