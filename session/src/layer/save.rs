//! Writing back what a request did to its session, as named steps: nothing,
//! destroy, insert a new session, move it between memory and store, or
//! write its changes (replayed on conflict).

use chrono::{DateTime, Utc};

use super::LayerShared;
use crate::{
    cookie::Presented,
    data::SessionData,
    error::StoreError,
    events::{DestroyedBy, EventKind, about},
    request::{After, Changes, Location, RequestState, Saved, StoredMeta, changed_fields},
    store::{Record, SessionStore, Update},
    token::SessionToken,
};

/// How many times a compare-and-swap write is tried (replaying the request's
/// changes on fresh data each time) before the request fails with
/// [`StoreError::Conflict`]. Between tries a request waits a random time of up
/// to [`MAX_CONFLICT_BACKOFF`] that doubles per try, so a burst of writers to one
/// session spreads out instead of colliding again in lockstep.
pub const MAX_WRITE_ATTEMPTS: u32 = 32;

/// The longest wait between two compare-and-swap tries.
pub const MAX_CONFLICT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// Full jitter: uniform in `[0, min(MAX_CONFLICT_BACKOFF, 1 ms × 2^attempt))`.
fn conflict_backoff(attempt: u32) -> std::time::Duration {
    let cap = MAX_CONFLICT_BACKOFF.min(std::time::Duration::from_millis(1u64 << attempt.min(16)));
    cap.mul_f64(rand::random::<f64>())
}

/// A save that wrote nothing.
fn unchanged<T>() -> Saved<T> {
    Saved {
        headers: Vec::new(),
        after: After::Unchanged,
    }
}

/// What a stored session's write looks like once decided.
pub(crate) struct PlannedWrite {
    update: Update,
    /// The token the client holds after the response.
    new_token: Option<SessionToken>,
    /// The expiry the cookie announces.
    expires_at: DateTime<Utc>,
    remember: bool,
    /// Whether the client needs the cookie again.
    send_cookie: bool,
}

/// What a request's save does, decided before any I/O: a request whose
/// session needs no write learns it without an allocation or an await.
pub(crate) enum Step<T> {
    /// Nothing to write.
    Nothing,
    Destroy(Destroy<T>),
    Insert(Insert<T>),
    Relocate(Relocate<T>),
    Write(Write<T>),
}

/// Delete the session (if stored) and remove the client's cookie (if it
/// presented one).
pub(crate) struct Destroy<T> {
    stored: Option<StoredMeta>,
    presented: bool,
    data: T,
}

/// Insert a session not yet in any store, under a new token.
pub(crate) struct Insert<T> {
    location: Location,
    data: T,
    now: DateTime<Utc>,
    remember: bool,
}

/// Move a stored session to `target` (`None`: delete it).
pub(crate) struct Relocate<T> {
    data: T,
    stored: StoredMeta,
    target: Option<Location>,
    token: Option<SessionToken>,
    now: DateTime<Utc>,
    remember: bool,
}

/// Write a stored session's changes.
pub(crate) struct Write<T> {
    data: T,
    stored: StoredMeta,
    changes: Changes<T>,
    planned: PlannedWrite,
    token: Option<SessionToken>,
}

impl<T: SessionData, S: SessionStore<T>> LayerShared<T, S> {
    /// Writes what the request did to its session: the headers that tell
    /// the client, and the session as it is now.
    pub(crate) async fn save(&self, state: RequestState<T>) -> Result<Saved<T>, StoreError> {
        let step = self.plan(state);
        self.run(step).await
    }

    /// Decides what writing the request's session takes (no I/O).
    pub(crate) fn plan(&self, state: RequestState<T>) -> Step<T> {
        let RequestState {
            data,
            presented,
            stored,
            changes,
            destroy,
            renew,
            remember,
            storable,
            headers: _,
            gone,
        } = state;
        // The handler never extracted the session, or it went away under an
        // earlier write of this request: nothing to do.
        let Some(data) = data.filter(|_| !gone) else {
            return Step::Nothing;
        };
        let now = Utc::now();
        if destroy {
            return Step::Destroy(Destroy {
                stored,
                presented: presented.is_some(),
                data,
            });
        }
        let Some(stored) = stored else {
            // A session not in any store: inserted with a new token once it
            // holds something worth keeping, where the mode keeps it.
            let worth_keeping =
                !changes.dirty.is_empty() || storable == Some(true) || remember == Some(true);
            return match self
                .target_location(storable, None)
                .filter(|_| worth_keeping)
            {
                Some(location) => Step::Insert(Insert {
                    location,
                    data,
                    now,
                    remember: remember.unwrap_or(false),
                }),
                None => Step::Nothing,
            };
        };
        let target = self.target_location(storable, Some(stored.location));
        if target != Some(stored.location) {
            let token = renew
                .then(SessionToken::generate)
                .or_else(|| presented.map(|presented| presented.token));
            let remember = remember.unwrap_or(stored.remember);
            return Step::Relocate(Relocate {
                data,
                stored,
                target,
                token,
                now,
                remember,
            });
        }
        let planned = self.plan_write(&stored, &changes, presented.as_ref(), renew, remember, now);
        if planned.update.is_empty() {
            return Step::Nothing;
        }
        let token = planned
            .new_token
            .clone()
            .or(presented.map(|presented| presented.token));
        Step::Write(Write {
            data,
            stored,
            changes,
            planned,
            token,
        })
    }

    /// Carries out a planned step.
    pub(crate) async fn run(&self, step: Step<T>) -> Result<Saved<T>, StoreError> {
        match step {
            Step::Nothing => Ok(unchanged()),
            Step::Destroy(step) => self.destroy(step).await,
            Step::Insert(step) => self.insert_new(step).await,
            Step::Relocate(step) => self.relocate(step).await,
            Step::Write(step) => self.write_changes(step).await,
        }
    }

    /// Deletes the session (if stored) and removes the client's cookie (if
    /// it presented one).
    async fn destroy(&self, step: Destroy<T>) -> Result<Saved<T>, StoreError> {
        let Destroy {
            stored,
            presented,
            ref data,
        } = step;
        if let Some(stored) = stored {
            self.delete_at(stored.location, &stored.id).await?;
            self.emit(
                stored.location,
                EventKind::Destroyed {
                    by: DestroyedBy::Request,
                },
                stored.id,
                data,
            );
        }
        Ok(Saved {
            headers: if presented {
                self.cookie.remove()
            } else {
                Vec::new()
            },
            after: After::Gone,
        })
    }

    /// Inserts a new session under a new token at `location`.
    async fn insert_new(&self, step: Insert<T>) -> Result<Saved<T>, StoreError> {
        let Insert {
            location,
            data,
            now,
            remember,
        } = step;
        // Never adopt a token the client chose: a new session gets a new one.
        let token = SessionToken::generate();
        let record = Record {
            id: token.id(),
            data,
            version: 1,
            expires_at: self.config().expires_at(now, now, remember),
            created_at: now,
            remember,
        };
        self.insert_at(location, &record).await?;
        // The id (a hash) is safe to log; the token never is.
        tracing::debug!(session = T::SCHEMA.struct_name, id = %record.id, ?location, "new session");
        self.emit(location, EventKind::Created, record.id, &record.data);
        Ok(self.stored(record, location, token, now, true))
    }

    /// What a write that stored `record` answers: the cookie if the client
    /// needs it, and the session as stored.
    fn stored(
        &self,
        record: Record<T>,
        location: Location,
        token: SessionToken,
        now: DateTime<Utc>,
        send_cookie: bool,
    ) -> Saved<T> {
        let headers = if send_cookie {
            self.cookie(&token, now, record.expires_at, record.remember)
        } else {
            Vec::new()
        };
        Saved {
            headers,
            after: After::Stored {
                meta: StoredMeta::of(&record, location),
                data: record.data,
                token,
            },
        }
    }

    /// Marked storable (or not) in this request: moves the session, writing
    /// the new copy before deleting the old one so that a failed write loses
    /// nothing; `None` target: deleted (consent withdrawn).
    async fn relocate(&self, step: Relocate<T>) -> Result<Saved<T>, StoreError> {
        let Relocate {
            data,
            ref stored,
            target,
            token,
            now,
            remember,
        } = step;
        let Some(location) = target else {
            self.delete_at(stored.location, &stored.id).await?;
            return Ok(Saved {
                headers: self.cookie.remove(),
                after: After::Gone,
            });
        };
        let token = token.unwrap_or_else(SessionToken::generate);
        let expires_at = self.config().expires_at(now, stored.created_at, remember);
        let record = Record {
            id: token.id(),
            data,
            version: stored.version + 1,
            expires_at,
            created_at: stored.created_at,
            remember,
        };
        self.insert_at(location, &record).await?;
        self.delete_at(stored.location, &stored.id).await?;
        Ok(self.stored(record, location, token, now, true))
    }

    /// Decides the UPDATE of a stored session and whether the client needs
    /// its cookie again.
    fn plan_write(
        &self,
        stored: &StoredMeta,
        changes: &Changes<T>,
        presented: Option<&Presented>,
        renew: bool,
        remember: Option<bool>,
        now: DateTime<Utc>,
    ) -> PlannedWrite {
        let new_token = renew.then(SessionToken::generate);
        let remember_change = remember.filter(|remember| *remember != stored.remember);
        let remember = remember.unwrap_or(stored.remember);
        let expires_at = self.config().expires_at(now, stored.created_at, remember);
        // The expiry moves once per touch fraction of the lifetime (or when
        // the lifetime itself changes), whatever else the request did: in
        // between, writes leave it, its index entry and the cookie alone.
        let moves_expiry = remember_change.is_some()
            || self
                .config()
                .should_touch(now, stored.expires_at, stored.remember, expires_at);
        // A new token, a new Max-Age, or a token sealed under a retired key.
        let reseal = presented.is_some_and(|presented| presented.reseal);
        PlannedWrite {
            update: Update {
                dirty: changes.dirty,
                expected_version: changes.compare_and_swap.then_some(stored.version),
                expires_at: moves_expiry.then_some(expires_at),
                new_id: new_token.as_ref().map(SessionToken::id),
                remember: remember_change,
                now,
            },
            send_cookie: new_token.is_some() || moves_expiry || reseal,
            new_token,
            expires_at: if moves_expiry {
                expires_at
            } else {
                stored.expires_at
            },
            remember,
        }
    }

    /// Writes the planned UPDATE; on a compare-and-swap conflict, replays the
    /// request's changes on the fresh row and tries again (bounded).
    async fn write_changes(&self, step: Write<T>) -> Result<Saved<T>, StoreError> {
        let Write {
            mut data,
            ref stored,
            mut changes,
            planned,
            token,
        } = step;
        let mut update = planned.update;
        let mut version = stored.version;
        let mut attempts = 0;
        loop {
            attempts += 1;
            if self
                .update_at(stored.location, &stored.id, &data, update)
                .await?
            {
                let Some(token) = token else {
                    // A stored session was always presented with a token.
                    return Ok(unchanged());
                };
                if let Some(new_id) = update.new_id {
                    self.emit(
                        stored.location,
                        EventKind::Renewed { from: stored.id },
                        new_id,
                        &data,
                    );
                }
                let record = Record {
                    id: update.new_id.unwrap_or(stored.id),
                    data,
                    // Exact after a compare-and-swap; after a
                    // last-writer-wins set, a later compare-and-swap that
                    // finds another version replays, as it should.
                    version: if update.is_touch() {
                        version
                    } else {
                        version + 1
                    },
                    expires_at: planned.expires_at,
                    created_at: stored.created_at,
                    remember: planned.remember,
                };
                return Ok(self.stored(
                    record,
                    stored.location,
                    token,
                    update.now,
                    planned.send_cookie,
                ));
            }
            if !changes.compare_and_swap {
                break;
            }
            if attempts == MAX_WRITE_ATTEMPTS {
                return Err(StoreError::Conflict { attempts });
            }
            tokio::time::sleep(conflict_backoff(attempts)).await;
            let Some((fresh, fresh_version)) =
                self.replay(stored, &mut changes, update.now).await?
            else {
                break;
            };
            data = fresh;
            version = fresh_version;
            update.dirty = changes.dirty;
            update.expected_version = Some(fresh_version);
        }
        // The row was destroyed, renewed or expired by another request:
        // dropping this write is what keeps it from coming back, and sending
        // no cookie is what keeps the browser's newer one (a login's renewed
        // token, say) in place. Only the request that destroyed a session
        // removes its cookie.
        tracing::warn!(
            session = T::SCHEMA.struct_name,
            id = %stored.id,
            dropped = ?changes.dirty,
            "the session was renewed, destroyed or expired by another request before this write; the write is dropped"
        );
        Ok(Saved {
            headers: Vec::new(),
            after: After::Gone,
        })
    }

    /// Reports a lifecycle event of a session kept in the store (sessions
    /// kept in memory until they are storable are not yet anyone's).
    fn emit(&self, location: Location, kind: EventKind, id: crate::token::SessionId, data: &T) {
        if location == Location::Store
            && let Some(events) = self.store.events()
        {
            events.emit(about(kind, id, Some(data)));
        }
    }

    /// Another request wrote first: the request's changes replayed on the
    /// fresh row, with its version; `None` if the session is gone.
    async fn replay(
        &self,
        stored: &StoredMeta,
        changes: &mut Changes<T>,
        now: DateTime<Utc>,
    ) -> Result<Option<(T, i64)>, StoreError> {
        let Some(fresh) = self.load_at(stored.location, &stored.id, now).await? else {
            return Ok(None);
        };
        let mut replayed = fresh.data.duplicate();
        for change in &mut changes.log {
            change(&mut replayed);
        }
        changes.dirty = changes.dirty.union(changed_fields(&fresh.data, &replayed)?);
        Ok(Some((replayed, fresh.version)))
    }
}
