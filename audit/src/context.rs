//! The request an event happened in: set by the web middleware around
//! every request, read when a line is stamped.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::task::futures::TaskLocalFuture;

/// What a line says about the request it came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The `X-Request-Id` of the request (as in the tracing span).
    pub request_id: Option<String>,
    /// The client's address (behind trusted proxies, the forwarded one).
    pub client: Option<IpAddr>,
}

tokio::task_local! {
    static CONTEXT: Option<Arc<RequestContext>>;
}

/// Runs `future` (a request's handling) with `context` for its events
/// (`None`: no audit log, nothing to stamp). A plain future, not an
/// `async fn`: the frame nests it in every request's future, and each
/// `async` wrapper would copy what it holds.
pub fn scope<F: Future>(
    context: Option<RequestContext>,
    future: F,
) -> TaskLocalFuture<Option<Arc<RequestContext>>, F> {
    CONTEXT.scope(context.map(Arc::new), future)
}

/// The context of the task running now, if inside [`scope`].
pub(crate) fn current() -> Option<Arc<RequestContext>> {
    CONTEXT.try_with(Option::clone).ok().flatten()
}

/// Runs `future` in an already shared context (a task spawned by a request).
pub(crate) async fn rescope<F: Future>(context: Arc<RequestContext>, future: F) -> F::Output {
    CONTEXT.scope(Some(context), future).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_context_is_seen_inside_the_scope_only() {
        assert_eq!(current(), None);
        let ctx = RequestContext {
            request_id: Some("r-1".into()),
            client: Some("192.0.2.7".parse().unwrap()),
        };
        let seen = scope(Some(ctx.clone()), async { current() }).await;
        assert_eq!(scope(None, async { current() }).await, None);
        assert_eq!(seen.as_deref(), Some(&ctx));
        assert_eq!(current(), None);
    }
}
