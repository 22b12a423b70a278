//! `<metrics enabled="true"><port>9465</port><bind>127.0.0.1</bind></metrics>` (Mailroom's own,
//! not in James): where the Prometheus `/metrics` and the `/health` endpoints listen. Absent
//! means off; the embedded default turns it on at 127.0.0.1:9465.

use std::net::{IpAddr, Ipv4Addr};

use crate::values::Ctx;
use crate::{Element, Location};

/// The port `<metrics>` listens on when it has no `<port>` (Prometheus's exporter range).
pub const DEFAULT_PORT: u16 = 9465;

/// The `<metrics>` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// Whether the endpoints are served (`enabled` attribute, default true inside the block).
    pub enabled: bool,
    /// `<port>`, default [`DEFAULT_PORT`].
    pub port: u16,
    /// `<bind>`, default 127.0.0.1: metrics say much about the traffic, so not on every
    /// interface unless asked.
    pub bind: IpAddr,
    /// Where the block is, for messages (`None` when absent).
    pub location: Option<Location>,
}

impl Default for Metrics {
    /// No `<metrics>` block: off.
    fn default() -> Self {
        Metrics {
            enabled: false,
            port: DEFAULT_PORT,
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            location: None,
        }
    }
}

impl Metrics {
    /// Reports a `<metrics>` listener on the address of an enabled service listener.
    pub(crate) fn cross_check(&self, ctx: &mut Ctx, listeners: &[(&crate::ServiceCommon, &str)]) {
        let Some(location) = self.location.as_ref().filter(|_| self.enabled) else {
            return;
        };
        let clash = listeners.iter().find(|(o, _)| {
            o.port == self.port
                && (o.bind == self.bind || o.bind.is_unspecified() || self.bind.is_unspecified())
        });
        if let Some((o, kind)) = clash {
            ctx.errors.push(location.error(format!(
                "<metrics> listens on {}:{}, which <{kind}> at {} already uses",
                self.bind, self.port, o.location
            )));
        }
    }
}

pub(crate) fn parse(ctx: &mut Ctx, el: &Element) -> Metrics {
    ctx.warn_unknown(el, &["port", "bind"]);
    let default = Metrics::default();
    let bind = match ctx.single(el, "bind") {
        Some(b) if !b.text.is_empty() => {
            crate::services::bind_address(&b.text).unwrap_or_else(|why| {
                ctx.err(b, format!("<bind> \"{}\": {why}", b.text));
                default.bind
            })
        }
        _ => default.bind,
    };
    Metrics {
        enabled: ctx.bool_attr(el, "enabled", true),
        port: ctx.num_child(el, "port", 1u16, 65535, DEFAULT_PORT),
        bind,
        location: Some(el.location()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    fn config(block: &str) -> Result<Config, crate::ConfigErrors> {
        let text = format!(
            "<config><spoolmanager><processor name=\"root\"/><processor name=\"error\"/>\
             </spoolmanager>{block}</config>"
        );
        Config::from_str_with_name(&text, "t.xml", Path::new("/tmp"), None)
    }

    #[test]
    fn absent_is_off_and_the_default_config_has_it_on_loopback() {
        assert!(!config("").unwrap().metrics.enabled);
        let default = Config::embedded_default(None).unwrap();
        assert!(default.metrics.enabled);
        assert_eq!(default.metrics.port, 9465);
        assert_eq!(default.metrics.bind.to_string(), "127.0.0.1");
    }

    #[test]
    fn port_bind_and_enabled_are_read_and_checked() {
        let m = config("<metrics><port>9999</port><bind>::1</bind></metrics>")
            .unwrap()
            .metrics;
        assert!(m.enabled);
        assert_eq!((m.port, m.bind.to_string().as_str()), (9999, "::1"));
        assert!(
            !config("<metrics enabled=\"false\"/>")
                .unwrap()
                .metrics
                .enabled
        );
        let errors = config("<metrics><port>0</port><bind>not an ip!</bind></metrics>")
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains("<port> must be a number from 1 to 65535"),
            "{errors}"
        );
        assert!(errors.contains("<bind> \"not an ip!\""), "{errors}");
        let errors = config(
            "<smtpserver><port>2600</port></smtpserver><metrics><port>2600</port></metrics>",
        )
        .unwrap_err()
        .to_string();
        assert!(
            errors.contains("<metrics> listens on 127.0.0.1:2600, which <smtpserver>"),
            "{errors}"
        );
    }
}
