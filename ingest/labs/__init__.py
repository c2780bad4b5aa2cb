"""Lab reports a user uploads (`/v1/labs`): accepted by content, stored under a key of our
own, submitted to Terra's lab-report API by a task, parsed biomarkers arriving later by webhook."""
