//! The bound on reading a request body (`request_body_timeout`). actix bounds how long a
//! request head may take (`client_request_timeout`) but not its body, so a login body
//! trickled one byte at a time held its connection for minutes. Every request starts under
//! the bound, counted from its head: a body still arriving after it fails to read, the
//! answer becomes 408 (`application/problem+json`) and the connection closes.
//!
//! The proxy [`lift`]s the bound for the routes it forwards: their uploads stream for as long
//! as the route's `timeout` allows. Everything else — the gateway's own endpoints, and any
//! endpoint added later — stays bound without opting in.

use std::{
    cell::{Cell, RefCell},
    future::Future as _,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{
    body::{BodySize, BoxBody, EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::ConnectionType,
    middleware::Next,
    web::{Bytes, Data},
    HttpMessage as _, HttpRequest, ResponseError as _,
};
use futures_util::Stream;
use tokio::time::{sleep_until, Instant, Sleep};

use super::ApiError;

/// A request body as actix boxes it.
type BoxedBody = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// How long a request body may take to arrive (app data read by [`limit`]).
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

/// What a request's bound, its body stream and the middleware share.
struct Watch {
    /// The body as actix gave it; [`Deadline`] reads it.
    body: RefCell<Payload>,
    lifted: Cell<bool>,
    expired: Cell<bool>,
    /// The body was read to its end.
    finished: Cell<bool>,
}

impl Watch {
    /// The body's unread rest, taken to be held until the answer is sent: actix closes an
    /// HTTP/1 connection whose body is unread while its reader lives, but drains a dropped
    /// chunked body for as long as the client keeps sending it. (An HTTP/2 stream ends on
    /// its own; the connection carries others.)
    fn unread_rest(&self) -> Option<Payload> {
        if self.lifted.get() || self.finished.get() {
            return None;
        }
        let mut body = self.body.try_borrow_mut().ok()?;
        matches!(*body, Payload::H1 { .. }).then(|| std::mem::replace(&mut *body, Payload::None))
    }
}

/// The request's handle on its bound (in its extensions), for [`lift`].
#[derive(Clone)]
struct Bound(Rc<Watch>);

/// Middleware: bounds reading the request's body by [`BodyTimeout`]. An answer given after a
/// read ran out of time becomes 408, whatever the reader made of the failed read; an answer
/// that leaves the body unread ends its connection.
pub async fn limit<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(timeout) = req.app_data::<Data<BodyTimeout>>().map(|t| t.0) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let watch = match req.take_payload() {
        // No body: nothing to wait for.
        Payload::None => None,
        payload => {
            let watch = Rc::new(Watch {
                body: RefCell::new(payload),
                lifted: Cell::new(false),
                expired: Cell::new(false),
                finished: Cell::new(false),
            });
            let body: BoxedBody = Box::pin(Deadline {
                deadline: Instant::now() + timeout,
                sleep: None,
                watch: Rc::clone(&watch),
            });
            req.set_payload(Payload::from(body));
            req.extensions_mut().insert(Bound(Rc::clone(&watch)));
            Some(watch)
        }
    };
    let res = next.call(req).await?;
    let Some(watch) = watch else {
        return Ok(res.map_into_left_body());
    };
    let expired = watch.expired.get();
    let unread = watch.unread_rest();
    if !expired && unread.is_none() {
        return Ok(res.map_into_left_body());
    }
    let res = if expired {
        let mut answer = ApiError::RequestTimeout.error_response();
        // The rest of the body may still be on its way: the connection cannot carry
        // another request (RFC 9110 §15.5.9).
        answer.head_mut().set_connection_type(ConnectionType::Close);
        res.into_response(answer)
    } else {
        res.map_body(|_, body| body.boxed())
    };
    Ok(res
        .map_body(|_, body| {
            BoxBody::new(HoldingUnread {
                body,
                _unread: unread,
            })
        })
        .map_into_right_body())
}

/// Lifts the bound from `req`'s body: for the proxied routes, whose uploads stream.
pub fn lift(req: &HttpRequest) {
    if let Some(bound) = req.extensions().get::<Bound>() {
        bound.0.lifted.set(true);
    }
}

/// A request body that fails once its deadline has passed, unless lifted first. The timer
/// is armed only when the body makes a reader wait: a body that is already there costs none.
struct Deadline {
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    watch: Rc<Watch>,
}

impl Deadline {
    /// Marks the bound as exceeded; the read fails with this error.
    fn expire(&self) -> Poll<Option<Result<Bytes, PayloadError>>> {
        self.watch.expired.set(true);
        Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the request body did not arrive within request_body_timeout",
        )))))
    }
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.watch.expired.get() {
            return Poll::Ready(None);
        }
        let bound = !this.watch.lifted.get();
        if bound && Instant::now() >= this.deadline {
            return this.expire();
        }
        let Ok(mut body) = this.watch.body.try_borrow_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *body).poll_next(cx) {
            Poll::Pending if bound => {
                drop(body);
                let deadline = this.deadline;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(sleep_until(deadline)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => this.expire(),
                    Poll::Pending => Poll::Pending,
                }
            }
            Poll::Ready(None) => {
                this.watch.finished.set(true);
                Poll::Ready(None)
            }
            other => other,
        }
    }
}

/// An answer's body that holds the request's unread body until it has been sent.
struct HoldingUnread {
    body: BoxBody,
    _unread: Option<Payload>,
}

impl MessageBody for HoldingUnread {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_next(cx)
    }
}
