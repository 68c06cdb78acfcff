"""What a call did, for operators: ``callctl call show`` (trace, CDRs, price, recordings, conference
events in one view) and ``callctl calls`` (calls in progress, from the running daemon)."""
