//! An example operator adapter, the one `docs/adapters.md` walks through: an endpoint
//! mapping that upper-cases text payloads and stamps a header on every record.

use mediation_adapter_sdk::guest::{Adapter, Context, ItemError, Role, Settings};
use mediation_adapter_sdk::{BatchBuilder, Item};

/// Upper-cases text payloads on the way to the broker and stamps a header.
#[derive(Debug)]
pub struct Shout {
    /// The header written on every record, and its value.
    stamp: (String, String),
}

impl Adapter for Shout {
    const ROLE: Role = Role::Endpoint;

    fn configure(settings: &Settings) -> Result<Self, String> {
        settings.only(&["header", "value"])?;
        let header = settings.get_or("header", "x-shouted").to_owned();
        let value = settings.get_or("value", "yes").to_owned();
        Ok(Self { stamp: (header, value) })
    }

    fn upstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        if item.is_binary() {
            return Err(ItemError::unsupported("shout only maps text payloads"));
        }
        let text = std::str::from_utf8(item.payload()).map_err(|e| ItemError::malformed(format!("payload: {e}")))?;
        out.copy_meta(item).payload(text.to_uppercase().as_bytes()).header(&self.stamp.0, self.stamp.1.as_bytes());
        Ok(())
    }

    fn downstream(&self, _ctx: &Context<'_>, item: &Item<'_>, out: &mut BatchBuilder) -> Result<(), ItemError> {
        out.copy(item);
        Ok(())
    }
}

mediation_adapter_sdk::export_adapter!(Shout);
