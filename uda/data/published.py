"""Where the file-backed classification benchmarks are published: read by the domain table (``uda data
list``) and by their readers' errors (``uda.data.benchmarks``). No imports: both may read it."""

PUBLISHED = {
    "officehome": "OfficeHomeDataset_10072016.zip from https://www.hemanthdv.org/officeHomeDataset.html",
    "visda17": "train.tar and validation.tar of the classification track, "
               "https://github.com/VisionLearningGroup/taskcv-2017-public/tree/master/classification",
    "domainnet": "the per-domain zips and <domain>_train.txt / <domain>_test.txt from https://ai.bu.edu/M3SDA/",
}
