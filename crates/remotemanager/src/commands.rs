//! The users commands: accounts, passwords, aliases and forwards, with James 2.3.2's replies.
//!
//! A name the repository refuses (`../../etc/x`) is, for a lookup, a user that does not exist;
//! adding one is refused with the reason. Repository failures are answered with an `Error`
//! line and logged.

use mailroom_mailet::MailAddress;
use mailroom_store::{StoreError, User, UsersRepository};

use crate::session::Out;

/// Splits `<name> <rest>` at the first space; both parts must be non-empty.
fn two_arguments(argument: Option<&str>) -> Option<(&str, &str)> {
    argument
        .and_then(|a| a.split_once(' '))
        .filter(|(name, rest)| !name.is_empty() && !rest.is_empty())
}

/// The one-name argument, when there is one.
fn one_argument(argument: Option<&str>) -> Option<&str> {
    argument.filter(|a| !a.is_empty())
}

/// Looks a user up; an invalid name is no user. `Err` carries the line already written.
async fn lookup(
    users: &dyn UsersRepository,
    name: &str,
    out: &mut Out<'_>,
) -> Result<Option<User>, ()> {
    match users.get(name).await {
        Ok(user) => Ok(user),
        Err(StoreError::InvalidName(..)) => Ok(None),
        Err(e) => {
            failed("reading the users repository", &e, out);
            Err(())
        }
    }
}

/// Runs `work`, which hashes a password (argon2id: tens of milliseconds of CPU), on the
/// blocking pool rather than on a runtime thread.
async fn hashed(work: impl FnOnce() -> User + Send + 'static) -> User {
    // On the bounded hashing threads: refused commands must not grow the memory.
    match mailroom_store::password::in_pool(work).await {
        Ok(user) => user,
        Err(e) => panic!("hashing a password: {e}"),
    }
}

/// Writes and logs a repository failure.
fn failed(doing: &str, error: &StoreError, out: &mut Out<'_>) {
    tracing::error!(%error, "RemoteManager: {doing}");
    out.line(format!("Error {doing}: {error}"));
}

/// Writes back a changed user, then `done`.
async fn update(users: &dyn UsersRepository, user: &User, done: String, out: &mut Out<'_>) {
    match users.update(user).await {
        Ok(()) => {
            tracing::info!("RemoteManager: {done}");
            out.line(done);
        }
        Err(e) => failed("updating the users repository", &e, out),
    }
}

/// Runs `change` on an existing user (else `No such user`), then writes it back.
async fn with_user(
    users: &dyn UsersRepository,
    name: &str,
    out: &mut Out<'_>,
    change: impl FnOnce(&mut User, &mut Out) -> Option<String>,
) {
    match lookup(users, name, out).await {
        Ok(Some(mut user)) => {
            if let Some(done) = change(&mut user, out) {
                update(users, &user, done, out).await;
            }
        }
        Ok(None) => out.line(format!("No such user {name}")),
        Err(()) => {}
    }
}

/// `adduser <u> <p>`.
pub async fn add_user(
    users: &dyn UsersRepository,
    keep_apop_secret: bool,
    argument: Option<&str>,
    out: &mut Out<'_>,
) {
    let Some((name, password)) = two_arguments(argument) else {
        return out.line("Usage: adduser [username] [password]");
    };
    let (name, password) = (name.to_string(), password.to_string());
    let user = hashed(move || {
        let mut user = User::new(&name, &password);
        user.apop_secret = keep_apop_secret.then_some(password);
        user
    })
    .await;
    let name = &user.name;
    match users.add(&user).await {
        Ok(()) => {
            tracing::info!(user = %name, "RemoteManager: user added");
            out.line(format!("User {name} added"));
        }
        Err(StoreError::AlreadyExists(_)) => out.line(format!("User {name} already exists")),
        Err(StoreError::InvalidName(_, why)) => {
            tracing::warn!(user = %name, why, "RemoteManager: user name refused");
            out.line(format!("Error adding user {name}: {why}"));
        }
        Err(e) => failed(&format!("adding user {name}"), &e, out),
    }
}

/// `setpassword <u> <p>`.
pub async fn set_password(
    users: &dyn UsersRepository,
    keep_apop_secret: bool,
    argument: Option<&str>,
    out: &mut Out<'_>,
) {
    let Some((name, password)) = two_arguments(argument) else {
        return out.line("Usage: setpassword [username] [password]");
    };
    let mut user = match lookup(users, name, out).await {
        Ok(Some(user)) => user,
        Ok(None) => return out.line(format!("No such user {name}")),
        Err(()) => return,
    };
    let password = password.to_string();
    let user = hashed(move || {
        user.set_password(&password, keep_apop_secret);
        user
    })
    .await;
    update(users, &user, format!("Password for {name} reset"), out).await;
}

/// `deluser <u>`.
pub async fn delete_user(users: &dyn UsersRepository, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(name) = one_argument(argument) else {
        return out.line("Usage: deluser [username]");
    };
    match users.remove(name).await {
        Ok(true) => {
            tracing::info!(user = %name, "RemoteManager: user deleted");
            out.line(format!("User {name} deleted"));
        }
        Ok(false) | Err(StoreError::InvalidName(..)) => {
            out.line(format!("User {name} doesn't exist"))
        }
        Err(e) => failed(&format!("deleting user {name}"), &e, out),
    }
}

/// `listusers`.
pub async fn list_users(users: &dyn UsersRepository, out: &mut Out<'_>) {
    match users.list().await {
        Ok(names) => {
            out.line(format!("Existing accounts {}", names.len()));
            for name in names {
                out.line(format!("user: {name}"));
            }
        }
        Err(e) => failed("listing users", &e, out),
    }
}

/// `countusers`.
pub async fn count_users(users: &dyn UsersRepository, out: &mut Out<'_>) {
    match users.count().await {
        Ok(n) => out.line(format!("Existing accounts {n}")),
        Err(e) => failed("counting users", &e, out),
    }
}

/// `verify <u>`.
pub async fn verify(users: &dyn UsersRepository, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(name) = one_argument(argument) else {
        return out.line("Usage: verify [username]");
    };
    match lookup(users, name, out).await {
        Ok(Some(_)) => out.line(format!("User {name} exists")),
        Ok(None) => out.line(format!("User {name} does not exist")),
        Err(()) => {}
    }
}

/// `setalias <u> <a>`: the alias must be an existing user.
pub async fn set_alias(users: &dyn UsersRepository, argument: Option<&str>, out: &mut Out<'_>) {
    let Some((name, alias)) = two_arguments(argument) else {
        return out.line("Usage: setalias [username] [emailaddress]");
    };
    let target = match lookup(users, name, out).await {
        Ok(Some(_)) => lookup(users, alias, out).await,
        Ok(None) => return out.line(format!("No such user {name}")),
        Err(()) => return,
    };
    match target {
        Ok(Some(_)) => {
            with_user(users, name, out, |user, _| {
                user.alias = Some(alias.to_string());
                user.alias_enabled = true;
                Some(format!("Alias for {name} set to:{alias}"))
            })
            .await
        }
        Ok(None) => out.line("Alias unknown to server - create that user first."),
        Err(()) => {}
    }
}

/// `showalias <u>`.
pub async fn show_alias(users: &dyn UsersRepository, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(name) = one_argument(argument) else {
        return out.line("Usage: showalias [username]");
    };
    match lookup(users, name, out).await {
        Ok(Some(User {
            alias: Some(alias),
            alias_enabled: true,
            ..
        })) => out.line(format!("Current alias for {name} is: {alias}")),
        Ok(Some(_)) => out.line(format!("User {name} does not currently have an alias")),
        Ok(None) => out.line(format!("No such user {name}")),
        Err(()) => {}
    }
}

/// `unsetalias <u>`.
pub async fn unset_alias(users: &dyn UsersRepository, argument: Option<&str>, out: &mut Out<'_>) {
    let Some(name) = one_argument(argument) else {
        return out.line("Usage: unsetalias [username]");
    };
    with_user(users, name, out, |user, out| {
        if !user.alias_enabled {
            // No space before the name: James's string, which scripts match.
            out.line(format!("Aliasing not active for{name}"));
            return None;
        }
        user.alias_enabled = false;
        Some(format!("Alias for {name} unset"))
    })
    .await;
}

/// `setforwarding <u> <address>`: the destination must parse as an address.
pub async fn set_forwarding(
    users: &dyn UsersRepository,
    argument: Option<&str>,
    out: &mut Out<'_>,
) {
    let Some((name, destination)) = two_arguments(argument) else {
        return out.line("Usage: setforwarding [username] [emailaddress]");
    };
    with_user(users, name, out, |user, out| {
        match MailAddress::parse(destination) {
            Ok(address) => {
                user.forward = Some(address.to_string());
                user.forward_enabled = true;
                Some(format!(
                    "Forwarding destination for {name} set to:{address}"
                ))
            }
            Err(e) => {
                out.line(format!("Parse exception with that email address: {e}"));
                out.line(format!("Forwarding address not added for {name}"));
                None
            }
        }
    })
    .await;
}

/// `showforwarding <u>`.
pub async fn show_forwarding(
    users: &dyn UsersRepository,
    argument: Option<&str>,
    out: &mut Out<'_>,
) {
    let Some(name) = one_argument(argument) else {
        return out.line("Usage: showforwarding [username]");
    };
    match lookup(users, name, out).await {
        Ok(Some(User {
            forward: Some(forward),
            forward_enabled: true,
            ..
        })) => out.line(format!(
            "Current forwarding destination for {name} is: {forward}"
        )),
        Ok(Some(_)) => out.line(format!("User {name} is not currently being forwarded")),
        Ok(None) => out.line(format!("No such user {name}")),
        Err(()) => {}
    }
}

/// `unsetforwarding <u>`.
pub async fn unset_forwarding(
    users: &dyn UsersRepository,
    argument: Option<&str>,
    out: &mut Out<'_>,
) {
    let Some(name) = one_argument(argument) else {
        return out.line("Usage: unsetforwarding [username]");
    };
    with_user(users, name, out, |user, out| {
        if !user.forward_enabled {
            out.line(format!("Forwarding not active for{name}"));
            return None;
        }
        user.forward_enabled = false;
        Some(format!("Forward for {name} unset"))
    })
    .await;
}
