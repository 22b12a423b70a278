//! The session's side of the repository's answers: [`Session::answer`] writes the reply for
//! the command that asked, or asks the next query of a multi-step command.

use mailroom_store::GroupInfo;

use super::{Incoming, Mode, Outcome, Pending, Selected, Session};
use crate::answers;
use crate::query::{Answer, Query};
use crate::reply::status;

impl Session {
    /// The answer to the last [`Outcome::Query`]: writes the reply, or asks the next query.
    pub fn answer(&mut self, answer: Answer, out: &mut Vec<u8>) -> Outcome {
        let Mode::Await(pending) = std::mem::replace(&mut self.mode, Mode::Command) else {
            return Outcome::Continue;
        };
        if let Answer::Failed = answer {
            status(out, 403, "internal fault: the news repository failed");
            return Outcome::Continue;
        }
        let posting = !self.settings.read_only;
        let ask = |session: &mut Session, pending: Pending, query: Query| {
            session.mode = Mode::Await(pending);
            Outcome::Query(query)
        };
        match (pending, answer) {
            (Pending::ListActive(w), Answer::Groups(groups)) => {
                answers::list_active(&groups, w.as_ref(), posting, out)
            }
            (Pending::ListTimes(w), Answer::Groups(groups)) => {
                answers::list_times(&groups, w.as_ref(), &self.settings.article_id_domain, out)
            }
            (Pending::ListNewsgroups(w), Answer::Groups(groups)) => {
                answers::list_newsgroups(&groups, w.as_ref(), &self.settings.descriptions, out)
            }
            (Pending::NewGroups(since), Answer::Groups(groups)) => {
                let new: Vec<GroupInfo> =
                    groups.into_iter().filter(|g| g.created >= since).collect();
                status(out, 231, "list of new newsgroups follows");
                answers::active_lines(&new, None, posting, out);
            }
            (Pending::NewNews(w), Answer::Arrivals(arrivals)) => {
                answers::new_news(&arrivals, &w, out)
            }
            (Pending::Group, Answer::Group(None))
            | (Pending::ListGroup(_), Answer::Group(None)) => status(out, 411, "no such newsgroup"),
            (Pending::Group, Answer::Group(Some(info))) => {
                status(
                    out,
                    211,
                    &format!("{} {} {} {}", info.count, info.low, info.high, info.name),
                );
                self.select(info);
            }
            (Pending::ListGroup(range), Answer::Group(Some(info))) => {
                let (low, high) = range.unwrap_or((info.low, info.high));
                let group = info.name.clone();
                return ask(
                    self,
                    Pending::ListGroupNumbers(info),
                    Query::Numbers { group, low, high },
                );
            }
            (Pending::ListGroupNumbers(info), Answer::Numbers(numbers)) => {
                status(
                    out,
                    211,
                    &format!(
                        "{} {} {} {} list follows",
                        info.count, info.low, info.high, info.name
                    ),
                );
                for n in numbers {
                    crate::reply::data_line(out, &n.to_string());
                }
                crate::reply::end(out);
                self.select(info);
            }
            (Pending::Step(next), Answer::Numbers(numbers)) => {
                let found = if next {
                    numbers.first()
                } else {
                    numbers.last()
                };
                match found {
                    None if next => status(out, 421, "no next article in this group"),
                    None => status(out, 422, "no previous article in this group"),
                    Some(&number) => {
                        let group = self.group_name();
                        return ask(
                            self,
                            Pending::StatNumber {
                                number,
                                missing: if next { 421 } else { 422 },
                            },
                            Query::Overview {
                                group,
                                low: number,
                                high: number,
                            },
                        );
                    }
                }
            }
            (Pending::StatNumber { number, missing }, Answer::Overview(lines)) => {
                match lines.first() {
                    Some(o) => {
                        status(out, 223, &format!("{number} {}", o.message_id()));
                        self.set_current(number);
                    }
                    None => answers::missing(missing, out),
                }
            }
            (Pending::StatId(id), Answer::Located(found)) => match found {
                Some(_) => status(out, 223, &format!("0 {id}")),
                None => answers::missing(430, out),
            },
            (
                Pending::Article {
                    part,
                    by_id,
                    missing,
                },
                Answer::Article(found),
            ) => match found {
                None => answers::missing(missing, out),
                Some(article) => {
                    let number = if by_id { 0 } else { article.number };
                    answers::article(part, number, &article, out);
                    if !by_id {
                        self.set_current(article.number);
                    }
                }
            },
            (Pending::Over { by_id, missing }, Answer::Overview(lines)) => {
                if lines.is_empty() {
                    answers::missing(missing, out);
                } else {
                    answers::over(&lines, by_id, out);
                }
            }
            (Pending::OverLocated, Answer::Located(found)) => {
                match found.and_then(|p| p.into_iter().next()) {
                    None => answers::missing(430, out),
                    Some((group, n)) => {
                        return ask(
                            self,
                            Pending::Over {
                                by_id: true,
                                missing: 430,
                            },
                            Query::Overview {
                                group,
                                low: n,
                                high: n,
                            },
                        )
                    }
                }
            }
            (Pending::HdrLocated(request), Answer::Located(found)) => {
                match found.and_then(|p| p.into_iter().next()) {
                    None => answers::missing(430, out),
                    Some((group, n)) => {
                        let query = if answers::overview_index(&request.field).is_some() {
                            Query::Overview {
                                group,
                                low: n,
                                high: n,
                            }
                        } else {
                            Query::Headers {
                                group,
                                low: n,
                                high: n,
                                field: request.field.clone(),
                            }
                        };
                        return ask(self, Pending::Hdr(request), query);
                    }
                }
            }
            (Pending::Hdr(request), Answer::Overview(lines)) => {
                let values = answers::overview_values(&request.field, &lines);
                answers::hdr(&request, values, out);
            }
            (Pending::Hdr(request), Answer::Headers(values)) => answers::hdr(&request, values, out),
            (Pending::IhaveCheck(id), Answer::Located(found)) => match found {
                Some(_) => status(out, 435, "article not wanted: already have it"),
                None => {
                    status(
                        out,
                        335,
                        "send article to be transferred; end with <CR-LF>.<CR-LF>",
                    );
                    self.mode = Mode::Article(Box::new(Incoming::new(Some(id))));
                }
            },
            (Pending::Post { ihave }, Answer::Posted(result)) => {
                answers::posted(ihave, result, out)
            }
            (Pending::CancelCheck { ihave, target }, Answer::Article(original)) => {
                let refuse = if ihave { 437 } else { 441 };
                match original {
                    None => status(out, refuse, "cancel: no such article"),
                    // The login that posted it, never the From header (anyone can write one).
                    Some(article) if article.poster.is_some() && article.poster == self.user => {
                        return ask(self, Pending::Cancel { ihave }, Query::Cancel(target));
                    }
                    Some(_) => status(
                        out,
                        refuse,
                        "cancel refused: only the login that posted an article may cancel it",
                    ),
                }
            }
            (Pending::Cancel { ihave }, Answer::Cancelled(done)) => match (done, ihave) {
                (true, false) => status(out, 240, "article cancelled"),
                (true, true) => status(out, 235, "cancel transferred"),
                (false, false) => status(out, 441, "cancel: no such article"),
                (false, true) => status(out, 437, "cancel: no such article"),
            },
            (pending, answer) => {
                tracing::error!(
                    ?pending,
                    ?answer,
                    "NNTP session: an answer that does not fit"
                );
                status(out, 403, "internal fault");
            }
        }
        Outcome::Continue
    }

    fn group_name(&self) -> String {
        self.group
            .as_ref()
            .map(|g| g.info.name.clone())
            .unwrap_or_default()
    }

    fn select(&mut self, info: GroupInfo) {
        let current = (info.count > 0).then_some(info.low);
        self.group = Some(Selected { info, current });
    }

    fn set_current(&mut self, number: u64) {
        if let Some(g) = &mut self.group {
            g.current = Some(number);
        }
    }
}
