use sluice_operators as _;
use sluice_connectors as _;
fn main() {}
