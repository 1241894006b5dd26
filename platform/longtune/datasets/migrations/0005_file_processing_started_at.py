from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("lt_datasets", "0004_file_purpose_evaluation_results"),
    ]

    operations = [
        migrations.AddField(
            model_name="file",
            name="processing_started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
