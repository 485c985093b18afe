//! Watermarks: how far event time has certainly advanced.
//!
//! Watermark = the lowest, over active inputs, of the highest event time
//! seen, minus the allowed lateness, rounded down to the watermark interval.
//! Rounding to a fixed grid of event time is what makes results independent
//! of batch size: the router cuts batches exactly where the watermark steps,
//! so every shard sees the same records between the same watermarks however
//! the input was chunked.

use sluice_operators::time::EventTime;

/// Tracks the watermark over a set of inputs (Kafka partitions, say). Inputs
/// are numbered densely by the source; the set grows as new inputs appear.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkTracker {
    lateness: i64,
    interval: i64,
    /// Highest event time per input; `None` until the input has data.
    inputs: Vec<Option<EventTime>>,
    current: Option<EventTime>,
}

impl WatermarkTracker {
    pub fn new(inputs: usize, lateness_ms: i64, interval_ms: i64) -> Self {
        Self { lateness: lateness_ms, interval: interval_ms.max(1), inputs: vec![None; inputs.max(1)], current: None }
    }

    /// The watermark emitted so far.
    pub fn current(&self) -> Option<EventTime> {
        self.current
    }

    /// Whether a record of this event time is late: older than its input's
    /// own watermark (that input's newest event time minus the allowed
    /// lateness, on the grid), or older than the overall watermark.
    ///
    /// Judged per input, lateness depends only on the order within the
    /// input, never on how inputs interleave, so it is the same in every run
    /// over the same partitions: a record on time on its input is never
    /// older than the overall watermark, which is the lowest, as long as no
    /// input was retired as idle. An input that comes back from idleness
    /// with old records is the one case that depends on timing; those records
    /// are late rather than reopening windows that already closed.
    pub fn is_late(&self, input: usize, t: EventTime) -> bool {
        let own = self.input_watermark(input).is_some_and(|wm| t < wm);
        own || self.current.is_some_and(|wm| t < wm)
    }

    /// An input's own watermark (see [`WatermarkTracker::is_late`]).
    pub fn input_watermark(&self, input: usize) -> Option<EventTime> {
        self.inputs.get(input).copied().flatten().filter(|&m| m != i64::MIN).map(|m| self.step(m))
    }

    fn step(&self, max: EventTime) -> EventTime {
        max.saturating_sub(self.lateness).div_euclid(self.interval) * self.interval
    }

    /// Observes a record; returns the new watermark if it stepped forward.
    pub fn observe(&mut self, input: usize, t: EventTime) -> Option<EventTime> {
        if input >= self.inputs.len() {
            self.inputs.resize(input + 1, None);
        }
        let slot = &mut self.inputs[input];
        if slot.is_some_and(|m| m >= t) {
            return None;
        }
        *slot = Some(t);
        self.recompute()
    }

    /// An idle or finished input stops holding the watermark back.
    pub fn retire(&mut self, input: usize) -> Option<EventTime> {
        if let Some(slot) = self.inputs.get_mut(input) {
            *slot = None;
        }
        self.recompute()
    }

    /// A new input that holds the watermark back (at the beginning of time)
    /// until it has data or is retired as idle.
    pub fn open(&mut self, input: usize) {
        if input >= self.inputs.len() {
            self.inputs.resize(input + 1, None);
        }
        self.inputs[input].get_or_insert(i64::MIN);
    }

    /// The newest event time an input has had, if any.
    pub fn newest(&self, input: usize) -> Option<EventTime> {
        self.inputs.get(input).copied().flatten().filter(|&m| m != i64::MIN)
    }

    /// An input taken over from another instance: it holds the watermark
    /// back from where it stood there (or, without data yet, as a new one).
    pub fn resume(&mut self, input: usize, newest: Option<EventTime>) {
        self.open(input);
        if let Some(t) = newest {
            self.inputs[input] = Some(t);
        }
    }

    /// Whether an input is retired (idle), or was never opened.
    pub fn is_retired(&self, input: usize) -> bool {
        self.inputs.get(input).is_none_or(Option::is_none)
    }

    /// Whether no input holds the watermark any more (all retired).
    pub fn is_empty(&self) -> bool {
        self.inputs.iter().all(Option::is_none)
    }

    /// Starts over, keeping the input numbers: used when every input has
    /// left this instance with its state, so the watermark of the inputs
    /// that come next is theirs alone.
    pub fn reset(&mut self) {
        self.inputs.iter_mut().for_each(|s| *s = None);
        self.current = None;
    }

    fn recompute(&mut self) -> Option<EventTime> {
        let low = *self.inputs.iter().flatten().min()?;
        if low == i64::MIN {
            return None; // an open input has no data yet
        }
        let stepped = self.step(low);
        if self.current.is_none_or(|c| stepped > c) {
            self.current = Some(stepped);
            Some(stepped)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_on_the_grid_and_never_goes_back() {
        let mut w = WatermarkTracker::new(1, 30_000, 10_000);
        assert_eq!(w.observe(0, 100_000), Some(70_000));
        assert_eq!(w.observe(0, 105_000), None); // 75_000 rounds to 70_000
        assert_eq!(w.observe(0, 90_000), None); // older record: no change
        assert_eq!(w.observe(0, 111_000), Some(80_000));
        assert!(w.is_late(0, 79_999));
        assert!(!w.is_late(0, 80_000));
    }

    #[test]
    fn slowest_input_holds_it_back_until_retired() {
        let mut w = WatermarkTracker::new(2, 0, 1);
        assert_eq!(w.observe(0, 500), Some(500));
        assert_eq!(w.observe(1, 100), None);
        assert_eq!(w.current(), Some(500));
        assert_eq!(w.observe(0, 900), None); // input 1 is at 100
        assert_eq!(w.observe(1, 800), Some(800));
        assert_eq!(w.retire(1), Some(900));
    }

    #[test]
    fn an_opened_input_holds_it_back_until_it_has_data_or_goes_idle() {
        let mut w = WatermarkTracker::new(1, 0, 1);
        w.open(3);
        assert_eq!(w.observe(0, 500), None, "input 3 has no data yet");
        assert_eq!(w.observe(3, 400), Some(400));
        // Lateness is per input: input 0 is far ahead, input 3 is not.
        assert!(w.is_late(0, 450) && !w.is_late(3, 450));
        w.open(5);
        assert_eq!(w.observe(3, 600), None);
        assert_eq!(w.retire(5), Some(500));
    }
}
