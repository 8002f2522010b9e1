//! The typed, actix-style API for replicated state: a [`ReplicatedActor`]
//! handles [`Message`]s (commands, agreed on by the group before they run)
//! and answers [`Query`]s (read-only).
//!
//! ## Determinism
//!
//! Every replica applies the same messages in the same order, and they must
//! all end in the same state. A handler's result and effect may depend only
//! on the actor's state, the message and the [`ApplyContext`]. So, inside
//! `handle`:
//!
//! * no clocks (`Instant::now`, `SystemTime`): put times in the message;
//! * no randomness: put random values in the message, or derive them from
//!   `ctx.index`;
//! * no I/O, no network, no reading environment variables or files;
//! * no iteration order you do not control: `HashMap`/`HashSet` iterate in a
//!   per-process random order; use `BTreeMap`/`BTreeSet` (or sort) when a
//!   result depends on order;
//! * no global or thread-local mutable state, no interior mutability shared
//!   with the outside;
//! * beware floating point that differs across CPUs or compilers;
//! * panics are bugs: a handler that panics stops the group on that node
//!   (*poisoned*), without a restart, since every replica would panic on
//!   the same message again. Requests to the group then fail with
//!   [`SynodError::Poisoned`](crate::SynodError::Poisoned), which names the
//!   group, the log index and the message type ([`Message::NAME`]). The
//!   way out: make the handler return an error for that message instead
//!   (a `Result` as its `Message::Result`) and restart the nodes; the
//!   message is handled again from the log. See docs/USER_GUIDE.md.
//!
//! Queries take `&self` and must not change anything.

use std::collections::HashMap;
use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use synod_actors::ApplyContext;

/// A command: a message the group agrees on, then every replica handles.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// What the handler returns (to the proposer).
    type Result: Serialize + DeserializeOwned + Send + 'static;
    /// The message's name on the wire and in the log. It must stay the same
    /// across versions of your program, and be unique per actor type. The
    /// [`message!`](crate::message) macro uses the type's name.
    const NAME: &'static str;
}

/// A read-only question to a replicated actor.
pub trait Query: Serialize + DeserializeOwned + Send + 'static {
    /// The answer.
    type Result: Serialize + DeserializeOwned + Send + 'static;
    /// Wire name; see [`Message::NAME`].
    const NAME: &'static str;
}

/// Says that actor `Self` registers `M` (a command or a query): the typed
/// calls ([`crate::ReplicatedAddr::send`], `read`, `read_lease`,
/// `read_local`) accept only registered messages, so forgetting to
/// register one is a compile error, not a `Rejected` at run time.
/// `#[derive(ReplicatedActor)]` implements it for what it lists; an actor
/// that implements [`ReplicatedActor`] by hand (a custom snapshot format)
/// declares it with [`registered!`](crate::registered).
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use synod::{ApplyContext, Command, Handler, ReplicatedActor};
///
/// #[derive(Serialize, Deserialize, Command)]
/// #[synod(name = "counter.add", result = "i64")]
/// struct Add(i64);
///
/// #[derive(Default, Serialize, Deserialize, ReplicatedActor)]
/// #[synod(commands(Add))]
/// struct Counter(i64);
///
/// impl Handler<Add> for Counter {
///     fn handle(&mut self, Add(n): Add, _: &ApplyContext) -> i64 {
///         self.0 += n;
///         self.0
///     }
/// }
///
/// async fn add(counter: synod::ReplicatedAddr<Counter>) -> Result<i64, synod::SynodError> {
///     counter.send(Add(1)).await
/// }
/// ```
///
/// A message the actor handles but does not list does not compile:
///
/// ```compile_fail
/// use serde::{Deserialize, Serialize};
/// use synod::{ApplyContext, Command, Handler, ReplicatedActor};
///
/// #[derive(Serialize, Deserialize, Command)]
/// #[synod(name = "counter.add", result = "i64")]
/// struct Add(i64);
/// #[derive(Serialize, Deserialize, Command)]
/// #[synod(name = "counter.reset")]
/// struct Reset;
///
/// #[derive(Default, Serialize, Deserialize, ReplicatedActor)]
/// #[synod(commands(Add))] // Reset is not listed
/// struct Counter(i64);
///
/// impl Handler<Add> for Counter {
///     fn handle(&mut self, Add(n): Add, _: &ApplyContext) -> i64 {
///         self.0 += n;
///         self.0
///     }
/// }
/// impl Handler<Reset> for Counter {
///     fn handle(&mut self, _: Reset, _: &ApplyContext) {
///         self.0 = 0;
///     }
/// }
///
/// async fn reset(counter: synod::ReplicatedAddr<Counter>) {
///     let _ = counter.send(Reset).await; // error: Counter: Registered<Reset> is not satisfied
/// }
/// ```
pub trait Registered<M> {}

/// Declares that `$actor` registers each of the messages and queries
/// listed (implements [`Registered`]), for an actor that implements
/// [`ReplicatedActor`] by hand: `synod::registered!(Store: Put, Get);`.
/// List exactly what its `register` registers.
#[macro_export]
macro_rules! registered {
    ($actor:ty: $($m:ty),* $(,)?) => {
        $( impl $crate::Registered<$m> for $actor {} )*
    };
}

/// Handles message `M`. One implementation per message type, as in actix.
pub trait Handler<M: Message>: ReplicatedActor {
    /// Applies the message. Must be deterministic (see the module docs).
    fn handle(&mut self, msg: M, ctx: &ApplyContext) -> M::Result;
}

/// Answers query `Q`.
pub trait QueryHandler<Q: Query>: ReplicatedActor {
    /// Answers from the current state, without changing it.
    fn query(&self, query: Q) -> Q::Result;
}

/// An actor whose messages are agreed on by a Raft group before they are
/// handled, so that every replica holds the same state.
///
/// Snapshots default to serde (MessagePack with field names, so fields can
/// be added later); override [`ReplicatedActor::snapshot`] and
/// [`ReplicatedActor::restore`] for a custom format.
pub trait ReplicatedActor: Serialize + DeserializeOwned + Send + 'static {
    /// Lists the messages and queries the actor handles:
    /// `h.command::<Inc>().query::<Get>();`.
    fn register(h: &mut Handlers<Self>);

    /// The whole state, for a snapshot.
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        rmp_serde::to_vec_named(self).map_err(|e| e.to_string())
    }

    /// The state back from a snapshot.
    fn restore(data: &[u8]) -> Result<Self, String> {
        rmp_serde::from_slice(data).map_err(|e| e.to_string())
    }
}

type CommandFn<A> = fn(&mut A, &[u8], &ApplyContext) -> Result<Vec<u8>, String>;
type QueryFn<A> = fn(&A, &[u8]) -> Result<Vec<u8>, String>;

/// The message and query handlers of an actor type, by name.
pub struct Handlers<A> {
    commands: HashMap<&'static str, CommandFn<A>>,
    queries: HashMap<&'static str, QueryFn<A>>,
    duplicates: Vec<&'static str>,
    _actor: PhantomData<fn() -> A>,
}

fn decode<T: DeserializeOwned>(bytes: &[u8], name: &str) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("cannot decode {name}: {e}"))
}

fn encode<T: Serialize>(value: &T, name: &str) -> Result<Vec<u8>, String> {
    rmp_serde::to_vec(value).map_err(|e| format!("cannot encode the result of {name}: {e}"))
}

impl<A: ReplicatedActor> Handlers<A> {
    pub(crate) fn collect() -> Self {
        let mut h = Handlers {
            commands: HashMap::new(),
            queries: HashMap::new(),
            duplicates: Vec::new(),
            _actor: PhantomData,
        };
        A::register(&mut h);
        h
    }

    /// Registers the handler of message `M`.
    pub fn command<M: Message>(&mut self) -> &mut Self
    where
        A: Handler<M>,
    {
        let f: CommandFn<A> = |actor, bytes, ctx| {
            let msg: M = decode(bytes, M::NAME)?;
            encode(&actor.handle(msg, ctx), M::NAME)
        };
        if self.commands.insert(M::NAME, f).is_some() {
            self.duplicates.push(M::NAME);
        }
        self
    }

    /// Registers the handler of query `Q`.
    pub fn query<Q: Query>(&mut self) -> &mut Self
    where
        A: QueryHandler<Q>,
    {
        let f: QueryFn<A> = |actor, bytes| {
            let q: Q = decode(bytes, Q::NAME)?;
            encode(&actor.query(q), Q::NAME)
        };
        if self.queries.insert(Q::NAME, f).is_some() {
            self.duplicates.push(Q::NAME);
        }
        self
    }

    pub(crate) fn duplicates(&self) -> &[&'static str] {
        &self.duplicates
    }

    /// A registered name that Synod's own entries use, if any.
    pub(crate) fn reserved(&self) -> Option<&'static str> {
        let reserved = [crate::session::COMMAND, crate::session::OPEN];
        self.commands
            .keys()
            .chain(self.queries.keys())
            .find(|n| reserved.contains(n))
            .copied()
    }

    pub(crate) fn apply(
        &self,
        actor: &mut A,
        data: &[u8],
        ctx: &ApplyContext,
    ) -> Result<Vec<u8>, String> {
        let (name, payload) = split_envelope(data)?;
        match self.commands.get(name) {
            Some(f) => f(actor, payload, ctx),
            None => Err(format!(
                "{} handles no message named {name:?}",
                std::any::type_name::<A>()
            )),
        }
    }

    pub(crate) fn run_query(&self, actor: &A, data: &[u8]) -> Result<Vec<u8>, String> {
        let (name, payload) = split_envelope(data)?;
        match self.queries.get(name) {
            Some(f) => f(actor, payload),
            None => Err(format!(
                "{} answers no query named {name:?}",
                std::any::type_name::<A>()
            )),
        }
    }
}

/// A message on the wire: name length (u16 LE), name, encoded message.
pub(crate) fn envelope<T: Serialize>(name: &str, value: &T) -> Result<Vec<u8>, String> {
    let len = u16::try_from(name.len()).map_err(|_| format!("message name {name:?} too long"))?;
    let mut out = Vec::with_capacity(2 + name.len() + 64);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    rmp_serde::encode::write(&mut out, value).map_err(|e| format!("cannot encode {name}: {e}"))?;
    Ok(out)
}

pub(crate) fn split_envelope(data: &[u8]) -> Result<(&str, &[u8]), String> {
    if data.len() < 2 {
        return Err("truncated message envelope".into());
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let name = data
        .get(2..2 + len)
        .ok_or("truncated message name")
        .and_then(|n| std::str::from_utf8(n).map_err(|_| "message name is not UTF-8"))?;
    Ok((name, &data[2 + len..]))
}

/// The bridge to the engine: a typed actor as a byte-level state machine,
/// with the group's client sessions ([`crate::session`]) beside it.
pub(crate) struct Typed<A> {
    pub actor: A,
    pub handlers: std::sync::Arc<Handlers<A>>,
    sessions: crate::session::Sessions,
    /// Whether the last apply changed nothing (a session's duplicate).
    unchanged: bool,
}

/// Marks a snapshot that carries client sessions beside the actor's own
/// snapshot (0xc1 is never used by MessagePack, so no serde snapshot of an
/// actor starts with it).
const SESSIONS_SNAPSHOT: &[u8] = b"\xc1synod-sessions-1";

impl<A> Typed<A> {
    pub(crate) fn new(actor: A, handlers: std::sync::Arc<Handlers<A>>) -> Self {
        Typed {
            actor,
            handlers,
            sessions: crate::session::Sessions::default(),
            unchanged: false,
        }
    }
}

impl<A: ReplicatedActor> synod_actors::StateMachine for Typed<A> {
    fn apply(&mut self, command: &[u8], ctx: &ApplyContext) -> Result<Vec<u8>, String> {
        use crate::session::{SessionCommand, COMMAND, OPEN};
        self.unchanged = false;
        let (name, payload) = split_envelope(command)?;
        match name {
            OPEN => {
                // Not a change of the actor's state: watches leave it out.
                self.unchanged = true;
                encode(&self.sessions.open(ctx.index), OPEN)
            }
            COMMAND => {
                let cmd: SessionCommand = decode(payload, COMMAND)?;
                let Typed {
                    actor,
                    handlers,
                    sessions,
                    ..
                } = self;
                let (outcome, applied) =
                    sessions.handle(&cmd, ctx.index, |c| handlers.apply(actor, c, ctx));
                self.unchanged = !applied;
                encode(&outcome, COMMAND)
            }
            _ => self.handlers.apply(&mut self.actor, command, ctx),
        }
    }

    fn query(&self, query: &[u8]) -> Result<Vec<u8>, String> {
        self.handlers.run_query(&self.actor, query)
    }

    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let actor = self.actor.snapshot()?;
        if self.sessions.is_empty() {
            return Ok(actor);
        }
        let mut out = SESSIONS_SNAPSHOT.to_vec();
        rmp_serde::encode::write(&mut out, &(&self.sessions, serde_bytes::Bytes::new(&actor)))
            .map_err(|e| format!("cannot encode the client sessions: {e}"))?;
        Ok(out)
    }

    fn restore(&mut self, data: &[u8]) -> Result<(), String> {
        match data.strip_prefix(SESSIONS_SNAPSHOT) {
            Some(rest) => {
                let (sessions, actor): (crate::session::Sessions, serde_bytes::ByteBuf) =
                    rmp_serde::from_slice(rest)
                        .map_err(|e| format!("cannot decode the client sessions: {e}"))?;
                self.actor = A::restore(&actor)?;
                self.sessions = sessions;
            }
            None => {
                self.actor = A::restore(data)?;
                self.sessions = crate::session::Sessions::default();
            }
        }
        Ok(())
    }

    /// The message's [`Message::NAME`], read from its envelope (inside a
    /// session's envelope, the command's).
    fn describe(&self, command: &[u8]) -> Option<String> {
        let (name, payload) = split_envelope(command).ok()?;
        if name == crate::session::COMMAND {
            let cmd: crate::session::SessionCommand = rmp_serde::from_slice(payload).ok()?;
            return self.describe(&cmd.command);
        }
        Some(name.to_string())
    }

    fn changed_nothing(&self) -> bool {
        self.unchanged
    }
}

/// Declares a [`Message`] (command) and its result type, named after the
/// type: `synod::message!(Inc => u64);`.
#[macro_export]
macro_rules! message {
    ($ty:ty => $result:ty) => {
        impl $crate::Message for $ty {
            type Result = $result;
            const NAME: &'static str = stringify!($ty);
        }
    };
}

/// Declares a [`Query`] and its answer type, named after the type:
/// `synod::query!(Get => u64);`.
#[macro_export]
macro_rules! query {
    ($ty:ty => $result:ty) => {
        impl $crate::Query for $ty {
            type Result = $result;
            const NAME: &'static str = stringify!($ty);
        }
    };
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Arc;

    use serde::{Deserialize, Serialize};
    use synod_actors::StateMachine;

    use super::*;

    /// Counts; panics on `Boom` (a poison message).
    #[derive(Default, Serialize, Deserialize)]
    struct Fragile(u64);

    #[derive(Serialize, Deserialize)]
    struct Add(u64);
    crate::message!(Add => u64);

    #[derive(Serialize, Deserialize)]
    struct Boom;
    crate::message!(Boom => ());

    impl Handler<Add> for Fragile {
        fn handle(&mut self, Add(n): Add, _: &ApplyContext) -> u64 {
            self.0 += n;
            self.0
        }
    }

    impl Handler<Boom> for Fragile {
        fn handle(&mut self, _: Boom, _: &ApplyContext) {
            panic!("Boom cannot be handled");
        }
    }

    impl ReplicatedActor for Fragile {
        fn register(h: &mut Handlers<Self>) {
            h.command::<Add>().command::<Boom>();
        }
    }

    /// Issue 8: the engine names the message whose handler panicked with
    /// the type's `Message::NAME`, read back from the entry's envelope.
    #[test]
    fn a_panicking_message_is_described_by_its_type_name() {
        let mut sm = Typed::new(Fragile::default(), Arc::new(Handlers::<Fragile>::collect()));
        let ctx = ApplyContext {
            group: 1,
            index: 3,
            term: 1,
        };
        let boom = envelope(Boom::NAME, &Boom).unwrap();
        let panicked = catch_unwind(AssertUnwindSafe(|| sm.apply(&boom, &ctx)));
        assert!(panicked.is_err(), "the handler was meant to panic");
        assert_eq!(sm.describe(&boom).as_deref(), Some("Boom"));
        let add = envelope(Add::NAME, &Add(2)).unwrap();
        assert_eq!(sm.describe(&add).as_deref(), Some("Add"));
        // Not an envelope: nothing to say, and no panic.
        assert_eq!(sm.describe(&[0xff]), None);
    }

    /// Client sessions travel in snapshots: a replica restored from one
    /// answers a retried command with the kept result instead of applying
    /// it again; a snapshot without sessions is the actor's own.
    #[test]
    fn client_sessions_survive_a_snapshot() {
        use crate::session::{SessionCommand, SessionOutcome, COMMAND, OPEN};
        let handlers = Arc::new(Handlers::<Fragile>::collect());
        let mut sm = Typed::new(Fragile::default(), Arc::clone(&handlers));
        let plain = sm.snapshot().unwrap();
        assert_eq!(plain, Fragile::default().snapshot().unwrap());
        let ctx = |index| ApplyContext {
            group: 1,
            index,
            term: 1,
        };
        let open = envelope(OPEN, &()).unwrap();
        let id: u64 = rmp_serde::from_slice(&sm.apply(&open, &ctx(1)).unwrap()).unwrap();
        let add = |seq| {
            envelope(
                COMMAND,
                &SessionCommand {
                    session: id,
                    seq,
                    acked_below: 1,
                    command: serde_bytes::ByteBuf::from(envelope(Add::NAME, &Add(5)).unwrap()),
                },
            )
            .unwrap()
        };
        let first = sm.apply(&add(1), &ctx(2)).unwrap();
        assert!(!sm.changed_nothing());
        let snapshot = sm.snapshot().unwrap();
        let mut restored = Typed::new(Fragile::default(), handlers);
        restored.restore(&snapshot).unwrap();
        assert_eq!(restored.actor.0, 5);
        // The retry, applied on the restored replica: the same answer, and
        // the counter stays at 5.
        assert_eq!(restored.apply(&add(1), &ctx(3)).unwrap(), first);
        assert!(restored.changed_nothing());
        assert_eq!(restored.actor.0, 5);
        let outcome: SessionOutcome = rmp_serde::from_slice(&first).unwrap();
        let result: u64 = match outcome {
            SessionOutcome::Done(Ok(b)) => rmp_serde::from_slice(&b).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(result, 5);
        assert_eq!(restored.describe(&add(2)).as_deref(), Some("Add"));
    }
}
