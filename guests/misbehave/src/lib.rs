//! A deliberately hostile endpoint adapter for the host's sandbox tests. What it does
//! with an item depends on the item's payload:
//!
//! | payload | behaviour |
//! |---|---|
//! | `loop` | spins forever, to be stopped by the call deadline |
//! | `panic` | panics, which traps the instance |
//! | `oom` | allocates until the memory cap stops it |
//! | anything containing `refuse` | refuses this item alone as malformed |
//! | anything else | passes the item through unchanged |

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// Misbehaves on request.
#[derive(Debug)]
pub struct Misbehave;

impl Adapter for Misbehave {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&[])?;
        Ok(Self)
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        match item.payload() {
            b"loop" => spin(),
            b"panic" => panic!("asked to panic"),
            b"oom" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                }
            }
            payload if payload.windows(6).any(|w| w == b"refuse") => Err(ItemError::malformed("refused on request")),
            _ => {
                out.copy(item);
                Ok(())
            }
        }
    }
}

/// Loops without end; `black_box` keeps the optimiser from proving it pointless.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

mediation_adapter_sdk::export_adapter!(Misbehave);
