//! An entrypoint adapter that passes every event through unchanged, each only after
//! `pause_ms`: a stand-in for a client protocol whose encoding is expensive. With it
//! the entrypoint's hub is the slowest part of the path, so tests and benchmarks can
//! watch what backpressure does upstream of it (the bus fills, and broker endpoints
//! stop consuming until the hub catches up).
//!
//! The sandbox has no sleep, so the pause is a wait on the monotonic clock: it takes
//! a core for its length. Keep `pause_ms` times the entrypoint's `ring.max_batch`
//! under the host's adapter call deadline.
//!
//! # Settings
//!
//! | Setting | Default | Meaning |
//! |---|---|---|
//! | `pause_ms` | `0` | How long each event waits before it is passed on, in milliseconds. |

use std::time::{Duration, Instant};

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// Passes events through, slowly.
#[derive(Debug)]
pub struct Pace {
    /// The wait before each event is passed on.
    pause: Duration,
}

impl Pace {
    fn pass(&self, item: &Item<'_>, out: &mut BatchBuilder) {
        let start = Instant::now();
        while start.elapsed() < self.pause {
            std::hint::spin_loop();
        }
        out.copy(item);
    }
}

impl Adapter for Pace {
    const ROLE: Role = Role::Entrypoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["pause_ms"])?;
        let pause = settings.get_or("pause_ms", "0");
        let pause = pause.parse().map_err(|e| format!("setting `pause_ms`: `{pause}` is not a whole number ({e})"))?;
        Ok(Self { pause: Duration::from_millis(pause) })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        self.pass(item, out);
        Ok(())
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        self.pass(item, out);
        Ok(())
    }
}

mediation_adapter_sdk::export_adapter!(Pace);
