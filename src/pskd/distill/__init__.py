"""Knowledge distillation: loss terms, the distiller that holds a student and frozen teachers, schedules."""
