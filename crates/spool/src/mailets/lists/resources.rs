//! The texts of the command list manager: James's `miResources.xml` format (`<group
//! name="..."><resource name="...">text</resource></group>`, `${NAME}` placeholders, and
//! `<matchers><matcher for="tag" match="regex"/>` choosing `for="tag"` variants for the lists
//! whose name matches), with built-in texts for every resource the commands use, so that a
//! file that is missing (the stock `/opt/james/...` path) or silent about one still works.

use std::collections::BTreeMap;
use std::path::Path;

/// Group, resource name, text (written for Mailroom; `miResources.xml` says the same things).
const BUILT_IN: &[(&str, &str, &str)] = &[
    ("List Manager", "command.not.understood",
     "The command \"${COMMAND}\" sent to the ${LIST_NAME} mailing list is not one I know."),
    ("List Manager", "invalid.mail.subject", "Your mail to the ${LIST_NAME} mailing list was not sent on"),
    ("List Manager", "error.attachments", "The ${LIST_NAME} mailing list does not accept attachments."),
    ("List Manager", "error.membersonly",
     "Only members of the ${LIST_NAME} mailing list may send mail to it."),
    ("subscribe", "already.subscribed", "You are a member of the ${LIST_NAME} mailing list already."),
    ("subscribe", "confirm.subscribe.subject", "Confirm your subscription to the ${LIST_NAME} mailing list"),
    ("subscribe", "confirm.subscribe.address", "${LIST_NAME}-subscribe-confirm@${DOMAIN_NAME}"),
    ("subscribe", "text", "\nSomeone, probably you, asked for\n\n   ${SENDER_ADDR}\n\nto join the \
     ${LIST_NAME} mailing list. To confirm, reply to this mail, or send an empty mail to\n\n   \
     ${LIST_NAME}-subscribe-confirm@${DOMAIN_NAME}\n\nIf you did not ask, ignore this mail: nothing \
     changes without your answer."),
    ("subscribeConfirm", "welcome.subscribe.address", "Welcome to the ${LIST_NAME} mailing list"),
    ("subscribeConfirm", "already.subscribed", "You are a member of the ${LIST_NAME} mailing list already."),
    ("subscribeConfirm", "text", "\nThe address\n\n   ${SENDER_ADDR}\n\nis now a member of the \
     ${LIST_NAME} mailing list, ${LIST_NAME}@${DOMAIN_NAME}.\n\nKeep this mail: it says which \
     address to leave the list from.\n"),
    ("unsubscribe", "not.subscribed", "You are not a member of the ${LIST_NAME} mailing list."),
    ("unsubscribe", "confirm.unsubscribe.subject", "Confirm that you leave the ${LIST_NAME} mailing list"),
    ("unsubscribe", "confirm.unsubscribe.address", "${LIST_NAME}-unsubscribe-confirm@${DOMAIN_NAME}"),
    ("unsubscribe", "text", "\nSomeone, probably you, asked for\n\n   ${SENDER_ADDR}\n\nto leave the \
     ${LIST_NAME} mailing list. To confirm, reply to this mail, or send an empty mail to\n\n   \
     ${LIST_NAME}-unsubscribe-confirm@${DOMAIN_NAME}"),
    ("unsubscribeConfirm", "goodbye.subscribe.address", "You have left the ${LIST_NAME} mailing list"),
    ("unsubscribeConfirm", "not.subscribed", "You are not a member of the ${LIST_NAME} mailing list."),
    ("unsubscribeConfirm", "text", "\nThe address\n\n   ${SENDER_ADDR}\n\nhas left the ${LIST_NAME} \
     mailing list. To join again, send a mail to ${LIST_NAME}-subscribe@${DOMAIN_NAME}"),
    ("error", "text", "\nYour request could not be done:\n    ${ERROR_MESSAGE}"),
    ("admincommands", "text", "\n\n--- Commands of the ${LIST_NAME} list ---\n\nSend commands to \
     these addresses, not to the list:\n\n   join:   <${LIST_NAME}-subscribe@${DOMAIN_NAME}>\n   \
     leave:  <${LIST_NAME}-unsubscribe@${DOMAIN_NAME}>\n   about:  <${LIST_NAME}-info@${DOMAIN_NAME}>\n\
     \nThe list's owner: ${LIST_NAME}-owner@${DOMAIN_NAME}"),
    ("info", "info.subject", "About the ${LIST_NAME} mailing list"),
    ("info", "text", "\n--- The ${LIST_NAME} list ---\n\nA mailing list of ${DOMAIN_NAME}: a mail \
     to ${LIST_NAME}@${DOMAIN_NAME} goes to every member.\n\n--- Members ---\n    ${MEMBER_LIST}"),
    ("header", "text", "\nThis is the list server of the ${LIST_NAME}@${DOMAIN_NAME} mailing list. \
     Its owner is at ${LIST_NAME}-owner@${DOMAIN_NAME}.\n"),
    ("footer", "text", "\n---------------------------------------------------------------------\n\
     To leave the list: ${LIST_NAME}-unsubscribe@${DOMAIN_NAME}\nOther commands: \
     ${LIST_NAME}-info@${DOMAIN_NAME}"),
    ("footer_html", "text", "\n---------------------------------------------------------------------\n\
     To leave the list: <a href=\"mailto:${LIST_NAME}-unsubscribe@${DOMAIN_NAME}\">\
     ${LIST_NAME}-unsubscribe@${DOMAIN_NAME}</a>\nOther commands: <a \
     href=\"mailto:${LIST_NAME}-info@${DOMAIN_NAME}\">${LIST_NAME}-info@${DOMAIN_NAME}</a>"),
];

/// A text's group and name.
type Key = (String, String);

/// The texts of one list, with its standard properties (`LIST_NAME`, `DISPLAY_NAME`,
/// `DOMAIN_NAME`) filled in when a text is asked for.
#[derive(Clone, Debug)]
pub(super) struct Resources {
    texts: BTreeMap<(String, String), String>,
    standard: Vec<(String, String)>,
}

impl Resources {
    /// The texts of the list `list_name` from `file` (James's `<resources>`), over the
    /// built-in ones. A file that does not exist leaves the built-in texts, with a warning; a
    /// file that exists and cannot be read or parsed is an error.
    pub(super) fn load(
        file: Option<&Path>,
        standard: Vec<(String, String)>,
    ) -> Result<Resources, String> {
        let mut texts: BTreeMap<(String, String), String> = BUILT_IN
            .iter()
            .map(|(g, k, t)| ((g.to_string(), k.to_string()), t.to_string()))
            .collect();
        let list_name = standard
            .iter()
            .find(|(k, _)| k == "LIST_NAME")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        if let Some(file) = file {
            match std::fs::read_to_string(file) {
                Ok(xml) => {
                    let overlay = parse(&xml, &list_name)
                        .map_err(|e| format!("<resources> {}: {e}", file.display()))?;
                    texts.extend(overlay);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => tracing::warn!(
                    "<resources> {} does not exist; the list {list_name} uses the built-in texts",
                    file.display()
                ),
                Err(e) => return Err(format!("<resources> {}: {e}", file.display())),
            }
        }
        Ok(Resources { texts, standard })
    }

    /// The text `group`/`name` with `${..}` filled in from `props` and the standard
    /// properties.
    pub(super) fn get(&self, group: &str, name: &str, props: &[(&str, &str)]) -> String {
        let mut text = self
            .texts
            .get(&(group.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_default();
        for (k, v) in props
            .iter()
            .copied()
            .chain(self.standard.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            text = text.replace(&format!("${{{k}}}"), v);
        }
        text
    }
}

/// The resources of a `miResources.xml` text for the list `list_name`: the default ones, then
/// those `for` the tag whose `<matcher match>` pattern matches the list's name.
fn parse(xml: &str, list_name: &str) -> Result<Vec<(Key, String)>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| e.to_string())?;
    let root = doc.root_element();
    let mut tag = None;
    for matcher in root
        .descendants()
        .filter(|n| n.has_tag_name("matchers"))
        .flat_map(|m| m.children().filter(|n| n.has_tag_name("matcher")))
    {
        let pattern = matcher.attribute("match").unwrap_or_default();
        let regex = regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .build()
            .map_err(|e| format!("<matcher match={pattern:?}>: {e}"))?;
        if regex.is_match(list_name) {
            tag = matcher.attribute("for");
            break;
        }
    }
    let mut defaults = Vec::new();
    let mut tagged = Vec::new();
    for group in root.descendants().filter(|n| n.has_tag_name("group")) {
        let group_name = group.attribute("name").unwrap_or_default();
        for resource in group.descendants().filter(|n| n.has_tag_name("resource")) {
            let Some(name) = resource.attribute("name") else {
                continue;
            };
            let text: String = resource
                .children()
                .filter_map(|c| c.text())
                .collect::<String>()
                .trim_end()
                .to_string();
            let key = (group_name.to_string(), name.to_string());
            match resource.attribute("for") {
                None | Some("") => defaults.push((key, text)),
                Some(t) if Some(t) == tag => tagged.push((key, text)),
                Some(_) => {}
            }
        }
    }
    defaults.extend(tagged);
    Ok(defaults)
}
