//! Single logout as a seam: every protocol that issues tickets registers a
//! [`LogoutParticipant`]; when a session ends, the engine hands each of its
//! notifications to the one participant that owns the service, skipping
//! the party that asked for the logout, and delivers what the participants
//! build with one policy for all: bounded concurrency, one retry schedule.
//!
//! The engine knows no HTTP: a participant builds its protocol's message
//! (a CAS `logoutRequest`, an OIDC logout token, a SAML SOAP request) and
//! sends it once when asked; the engine decides when to ask again.

use crate::audit::{AuditEvent, AuditKind, AuditSink, Outcome};
use crate::engine::LogoutNotification;
use crate::principal::Principal;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

/// The session that ended.
#[derive(Debug, Clone)]
pub struct EndedSession {
    pub session_id: String,
    pub principal: Arc<Principal>,
}

/// Who asked for the logout: it learns the outcome from its own
/// protocol's answer, so it is not notified again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiator {
    /// [`LogoutParticipant::name`] of the protocol it speaks.
    pub participant: &'static str,
    /// The party, as [`LogoutParticipant::party`] names it.
    pub party: String,
}

/// A message for one party, sent server to server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutMessage {
    /// For logs: the service, client or SP told.
    pub party: String,
    /// Where it goes (a URL the participant understands).
    pub endpoint: String,
    /// The protocol's message, ready to send.
    pub payload: String,
}

/// A party that can only be told through the user's browser (SAML
/// front-channel logout). The participant that built it drives the visit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontChannelVisit {
    pub participant: String,
    pub party: String,
    /// What the participant needs for the visit, in its own encoding.
    pub data: String,
}

/// The outcome of one attempt to deliver a [`LogoutMessage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Delivered,
    /// The party refused it (a 4xx): asking again will not help.
    Refused,
    /// Not reached, or failed on its side: worth another attempt.
    Failed,
}

/// A protocol module that issues tickets to its own service URLs and must
/// tell its parties when a session that used them ends.
#[async_trait]
pub trait LogoutParticipant: Send + Sync + 'static {
    /// Short protocol name, for logs and [`Initiator`].
    fn name(&self) -> &'static str;

    /// The party a service URL belongs to, when this participant owns it.
    fn party(&self, service: &str) -> Option<String>;

    /// Messages to send server to server for the notifications it owns
    /// (never those of the initiator). Called off the request path.
    async fn messages(
        &self,
        ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<LogoutMessage>;

    /// Parties to visit in the user's browser, when one is there.
    async fn visits(
        &self,
        _ended: &EndedSession,
        _notifications: &[LogoutNotification],
    ) -> Vec<FrontChannelVisit> {
        Vec::new()
    }

    /// Sends one message once.
    async fn send(&self, message: &LogoutMessage) -> Attempt;
}

/// How messages are delivered, the same for every protocol.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// Messages in flight at once, across all sessions and protocols.
    pub concurrency: usize,
    /// Pauses before the second, third… attempt: attempts = pauses + 1.
    pub retry_pauses: Vec<Duration>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self {
            concurrency: 64,
            retry_pauses: vec![Duration::from_secs(1), Duration::from_secs(2)],
        }
    }
}

/// What a logout started: the browser visits to make (empty when no
/// participant needs the browser), and the background deliveries.
#[derive(Debug, Default)]
pub struct Dispatched {
    pub visits: Vec<FrontChannelVisit>,
    /// Finishes when every message was delivered or given up; nobody
    /// needs to wait for it but tests.
    pub deliveries: Option<JoinHandle<()>>,
}

/// The participants and the delivery policy.
#[derive(Clone)]
pub struct SingleLogout {
    participants: Vec<Arc<dyn LogoutParticipant>>,
    policy: Arc<DeliveryPolicy>,
    permits: Arc<Semaphore>,
    audit: Option<Arc<dyn AuditSink>>,
}

impl Default for SingleLogout {
    fn default() -> Self {
        Self::new(Vec::new(), DeliveryPolicy::default())
    }
}

impl SingleLogout {
    /// `participants` are asked in order: the first that owns a service
    /// gets its notification (a catch-all, CAS, goes last).
    pub fn new(participants: Vec<Arc<dyn LogoutParticipant>>, policy: DeliveryPolicy) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(policy.concurrency.max(1))),
            policy: Arc::new(policy),
            participants,
            audit: None,
        }
    }

    /// Where each delivery's outcome is told (the engine's audit sink).
    pub fn with_audit(mut self, audit: Option<Arc<dyn AuditSink>>) -> Self {
        self.audit = audit;
        self
    }

    /// Hands every notification of an ended session to its owner and
    /// starts the deliveries; returns at once with the browser visits.
    pub async fn dispatch(
        &self,
        ended: EndedSession,
        notifications: Vec<LogoutNotification>,
        initiator: Option<&Initiator>,
    ) -> Dispatched {
        let mut owned: Vec<Vec<LogoutNotification>> = vec![Vec::new(); self.participants.len()];
        for n in notifications {
            let owner = self
                .participants
                .iter()
                .enumerate()
                .find_map(|(i, p)| p.party(&n.service).map(|party| (i, p.name(), party)));
            match owner {
                Some((_, name, party))
                    if initiator.is_some_and(|i| i.participant == name && i.party == party) => {}
                Some((i, _, _)) => owned[i].push(n),
                None => tracing::debug!("single logout: a service no participant owns"),
            }
        }
        let mut visits = Vec::new();
        for (p, notes) in self.participants.iter().zip(&owned) {
            if !notes.is_empty() {
                visits.extend(p.visits(&ended, notes).await);
            }
        }
        if owned.iter().all(Vec::is_empty) {
            return Dispatched {
                visits,
                deliveries: None,
            };
        }
        let this = self.clone();
        let deliveries = async move {
            let mut sending = Vec::new();
            for (p, notes) in this.participants.iter().zip(owned) {
                if notes.is_empty() {
                    continue;
                }
                for message in p.messages(&ended, &notes).await {
                    let (p, policy, permits) =
                        (p.clone(), this.policy.clone(), this.permits.clone());
                    let audit = this.audit.clone();
                    let user = ended.principal.id.clone();
                    let sending_one = async move {
                        let Ok(_permit) = permits.acquire_owned().await else {
                            return;
                        };
                        let outcome = deliver(p.as_ref(), &policy, &message).await;
                        if let Some(audit) = audit {
                            audit.record(
                                AuditEvent::new(AuditKind::SingleLogout, outcome)
                                    .user(user)
                                    .party(message.party.clone())
                                    .protocol(p.name()),
                            );
                        }
                    };
                    sending.push(tokio::spawn(this.bound(Box::pin(sending_one))));
                }
            }
            for s in sending {
                let _ = s.await;
            }
        };
        let deliveries = tokio::spawn(self.bound(Box::pin(deliveries)));
        Dispatched {
            visits,
            deliveries: Some(deliveries),
        }
    }
}

impl SingleLogout {
    /// A delivery task, keeping the context of the request that started it
    /// for the audit sink.
    fn bound(&self, task: crate::audit::Task) -> crate::audit::Task {
        match &self.audit {
            Some(audit) => audit.bind(task),
            None => task,
        }
    }
}

/// Sends one message on the retry schedule; how it ended.
async fn deliver(
    p: &dyn LogoutParticipant,
    policy: &DeliveryPolicy,
    message: &LogoutMessage,
) -> Outcome {
    let attempts = policy.retry_pauses.len() + 1;
    for attempt in 1..=attempts {
        match p.send(message).await {
            Attempt::Delivered => {
                tracing::info!(protocol = p.name(), party = %message.party, "single logout delivered");
                return Outcome::Ok;
            }
            Attempt::Refused => {
                tracing::warn!(protocol = p.name(), party = %message.party, "single logout refused");
                return Outcome::Refused;
            }
            Attempt::Failed => {
                tracing::warn!(protocol = p.name(), party = %message.party, attempt, "single logout failed");
            }
        }
        if let Some(pause) = policy.retry_pauses.get(attempt - 1) {
            tokio::time::sleep(*pause).await;
        }
    }
    Outcome::Failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::LogoutMode;
    use parking_lot::Mutex;

    /// Owns the services under its prefix; records what it was asked.
    struct Recorder {
        name: &'static str,
        prefix: &'static str,
        answers: Mutex<Vec<Attempt>>,
        sent: Mutex<Vec<String>>,
        front: bool,
    }

    impl Recorder {
        fn new(name: &'static str, prefix: &'static str, answers: Vec<Attempt>) -> Arc<Self> {
            Arc::new(Self {
                name,
                prefix,
                answers: Mutex::new(answers),
                sent: Mutex::new(Vec::new()),
                front: false,
            })
        }
    }

    #[async_trait]
    impl LogoutParticipant for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }
        fn party(&self, service: &str) -> Option<String> {
            service.strip_prefix(self.prefix).map(str::to_owned)
        }
        async fn messages(
            &self,
            _: &EndedSession,
            notes: &[LogoutNotification],
        ) -> Vec<LogoutMessage> {
            if self.front {
                return Vec::new();
            }
            notes
                .iter()
                .map(|n| LogoutMessage {
                    party: n.service.clone(),
                    endpoint: n.service.clone(),
                    payload: n.ticket_id.clone(),
                })
                .collect()
        }
        async fn visits(
            &self,
            _: &EndedSession,
            notes: &[LogoutNotification],
        ) -> Vec<FrontChannelVisit> {
            if !self.front {
                return Vec::new();
            }
            notes
                .iter()
                .map(|n| FrontChannelVisit {
                    participant: self.name.into(),
                    party: n.service.clone(),
                    data: n.ticket_id.clone(),
                })
                .collect()
        }
        async fn send(&self, m: &LogoutMessage) -> Attempt {
            self.sent.lock().push(m.payload.clone());
            let mut answers = self.answers.lock();
            if answers.is_empty() {
                Attempt::Delivered
            } else {
                answers.remove(0)
            }
        }
    }

    fn note(service: &str, ticket: &str) -> LogoutNotification {
        LogoutNotification {
            service: service.into(),
            ticket_id: ticket.into(),
            principal_id: "alice".into(),
            mode: LogoutMode::BackChannel,
        }
    }

    fn ended() -> EndedSession {
        EndedSession {
            session_id: "TGT-1".into(),
            principal: Arc::new(Principal::new("alice")),
        }
    }

    fn quick() -> DeliveryPolicy {
        DeliveryPolicy {
            concurrency: 2,
            retry_pauses: vec![Duration::ZERO, Duration::ZERO],
        }
    }

    #[tokio::test]
    async fn each_notification_reaches_exactly_one_owner_and_the_initiator_is_skipped() {
        let oidc = Recorder::new("oidc", "https://idp/oidc/", vec![]);
        let saml = Recorder::new("saml", "https://idp/saml/", vec![]);
        // The catch-all goes last: it must not see the others' services.
        let cas = Recorder::new("cas", "https://", vec![]);
        let slo = SingleLogout::new(vec![oidc.clone(), saml.clone(), cas.clone()], quick());
        let notes = vec![
            note("https://idp/oidc/rp1", "ST-1"),
            note("https://idp/saml/sp1", "ST-2"),
            note("https://idp/saml/sp2", "ST-3"),
            note("https://app/", "ST-4"),
        ];
        let initiator = Initiator {
            participant: "saml",
            party: "sp1".into(),
        };
        let d = slo.dispatch(ended(), notes, Some(&initiator)).await;
        d.deliveries.unwrap().await.unwrap();
        assert_eq!(*oidc.sent.lock(), ["ST-1"]);
        assert_eq!(*saml.sent.lock(), ["ST-3"], "the initiator sp1 is skipped");
        assert_eq!(*cas.sent.lock(), ["ST-4"]);
    }

    #[tokio::test]
    async fn a_failure_is_retried_on_the_schedule_and_a_refusal_is_not() {
        let failing = Recorder::new(
            "a",
            "https://a/",
            vec![
                Attempt::Failed,
                Attempt::Failed,
                Attempt::Failed,
                Attempt::Failed,
            ],
        );
        let refusing = Recorder::new("b", "https://b/", vec![Attempt::Refused]);
        let slo = SingleLogout::new(vec![failing.clone(), refusing.clone()], quick());
        let d = slo
            .dispatch(
                ended(),
                vec![note("https://a/x", "ST-a"), note("https://b/x", "ST-b")],
                None,
            )
            .await;
        d.deliveries.unwrap().await.unwrap();
        assert_eq!(
            failing.sent.lock().len(),
            3,
            "three attempts, then given up"
        );
        assert_eq!(refusing.sent.lock().len(), 1);
    }

    #[tokio::test]
    async fn front_channel_parties_come_back_as_visits() {
        let front = Arc::new(Recorder {
            front: true,
            ..Arc::into_inner(Recorder::new("saml", "https://idp/saml/", vec![])).unwrap()
        });
        let slo = SingleLogout::new(vec![front.clone()], quick());
        let d = slo
            .dispatch(ended(), vec![note("https://idp/saml/sp9", "ST-9")], None)
            .await;
        assert_eq!(d.visits.len(), 1);
        assert_eq!(d.visits[0].party, "https://idp/saml/sp9");
        d.deliveries.unwrap().await.unwrap();
        assert!(front.sent.lock().is_empty());
    }
}
