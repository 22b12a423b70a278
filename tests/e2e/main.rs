//! End-to-end tests: the real `mailroom` binary on free loopback ports, driven by real clients
//! (Python's smtplib and a raw SMTP client, Python sockets and telnet for the RemoteManager).

mod cli;
mod crash;
mod delivery;
mod harness;
mod interop;
mod processor_tree;
mod remote_manager;
mod smtp_input;
