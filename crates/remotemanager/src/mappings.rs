//! `addmapping`, `removemapping`, `listmapping`, `listallmappings`: the virtual user tables.
//!
//! Arguments: an optional `table=<name>` (else the default table), the source
//! (`user@domain`, `*@domain`, `user@*`) and, to add or remove, the target — the rest of the
//! line, so that `error:550 no such user` keeps its text.

use mailroom_store::mappings::{Source, Target, DEFAULT_TABLE};
use mailroom_store::MappingsRepository;

use crate::session::Out;

/// Splits off a leading `table=<name>`.
fn table_of(argument: &str) -> (&str, &str) {
    match argument.strip_prefix("table=") {
        Some(rest) => rest.split_once(' ').unwrap_or((rest, "")),
        None => (DEFAULT_TABLE, argument),
    }
}

/// Parses `[table=t] <source> <target>`; `Err` holds the reason when the parts are there but
/// invalid, `Ok(None)` when they are missing.
fn parse_change(argument: Option<&str>) -> Result<Option<(&str, Source, Target)>, String> {
    let Some(argument) = argument else {
        return Ok(None);
    };
    let (table, rest) = table_of(argument.trim());
    let Some((source, target)) = rest.trim().split_once(' ') else {
        return Ok(None);
    };
    if table.is_empty() || target.trim().is_empty() {
        return Ok(None);
    }
    Ok(Some((
        table,
        Source::parse(source)?,
        Target::parse(target)?,
    )))
}

/// `addmapping` / `removemapping`.
async fn change(
    mappings: &dyn MappingsRepository,
    argument: Option<&str>,
    out: &mut Out<'_>,
    adding: bool,
) {
    let (usage, doing, done) = if adding {
        (
            "Usage: ADDMAPPING [table=table] user@domain mapping",
            "adding",
            "Adding",
        )
    } else {
        (
            "Usage: REMOVEMAPPING [table=table] user@domain mapping",
            "removing",
            "Removing",
        )
    };
    let (table, source, target) = match parse_change(argument) {
        Ok(Some(parts)) => parts,
        Ok(None) => return out.line(usage),
        Err(why) => return out.line(format!("Error on {doing} mapping: {why}")),
    };
    let result = if adding {
        mappings.add(table, &source, &target).await
    } else {
        mappings.remove(table, &source, &target).await
    };
    match result {
        Ok(changed) => {
            if changed {
                tracing::info!(%table, %source, %target, "RemoteManager: mapping {doing}");
            }
            out.line(format!("{done} mapping successful: {changed}"));
        }
        Err(e) => {
            tracing::error!(error = %e, "RemoteManager: {doing} mapping failed");
            out.line(format!("Error on {doing} mapping: {e}"));
        }
    }
}

/// `addmapping [table=t] <source> <target>`.
pub async fn add(mappings: &dyn MappingsRepository, argument: Option<&str>, out: &mut Out<'_>) {
    change(mappings, argument, out, true).await;
}

/// `removemapping [table=t] <source> <target>`.
pub async fn remove(mappings: &dyn MappingsRepository, argument: Option<&str>, out: &mut Out<'_>) {
    change(mappings, argument, out, false).await;
}

/// Joins targets for display.
fn joined(targets: &[Target]) -> String {
    let texts: Vec<String> = targets.iter().map(ToString::to_string).collect();
    texts.join(", ")
}

/// `listmapping [table=t] <source>`.
pub async fn list(mappings: &dyn MappingsRepository, argument: Option<&str>, out: &mut Out<'_>) {
    const USAGE: &str = "Usage: LISTMAPPING [table=table] user@domain";
    let Some(argument) = argument else {
        return out.line(USAGE);
    };
    let (table, source) = table_of(argument.trim());
    let source = source.trim();
    if table.is_empty() || source.is_empty() || source.contains(' ') {
        return out.line(USAGE);
    }
    let source = match Source::parse(source) {
        Ok(source) => source,
        Err(why) => return out.line(format!("Error on listing mapping: {why}")),
    };
    match mappings.get(table, &source).await {
        Ok(targets) if targets.is_empty() => out.line("No mappings found"),
        Ok(targets) => out.line(format!("Mappings: {}", joined(&targets))),
        Err(e) => out.line(format!("Error on listing mapping: {e}")),
    }
}

/// `listallmappings [table=t]`.
pub async fn list_all(
    mappings: &dyn MappingsRepository,
    argument: Option<&str>,
    out: &mut Out<'_>,
) {
    let table = match argument.map(str::trim).filter(|a| !a.is_empty()) {
        None => DEFAULT_TABLE,
        Some(arg) => match arg.strip_prefix("table=") {
            Some(table) if !table.is_empty() && !table.contains(' ') => table,
            _ => return out.line("Usage: LISTALLMAPPINGS [table=table]"),
        },
    };
    match mappings.all(table).await {
        Ok(all) if all.is_empty() => out.line("No mappings found"),
        Ok(all) => {
            out.line("Mappings:");
            for (source, targets) in all {
                out.line(format!("{source} -> {}", joined(&targets)));
            }
        }
        Err(e) => out.line(format!("Error on listing all mapping: {e}")),
    }
}
