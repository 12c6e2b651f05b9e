//! Values every pipeline record uses: money, periods and dates (from platform), bounded text.

pub use crm_platform::money::{Money, currency_code};

pub use crm_platform::period::{Period, date};

pub use crm_platform::text::trimmed as text;
