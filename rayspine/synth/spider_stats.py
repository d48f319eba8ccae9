"""What the demo archive borrows from the real SPIDER metadata (../shared/data/spider), embedded so that a
fresh clone without the shared data can still synthesise.

``T1_ACQUISITIONS`` is one real T1 series per distinct (manufacturer, model, field strength, pixel spacing,
slice thickness) in SPIDER's ``overview.csv``, all acquisition columns verbatim (``source_series`` names the
row). The rates come from ``radiological_gradings.csv``. tests/test_synth.py re-derives all of them from the
real files when present, so a drift is caught.
"""

from __future__ import annotations

import ast
import io

import pandas as pd

# SPIDER's overview.csv columns, in order (the demo archive writes them all, plus ``site``).
OVERVIEW_COLUMNS = [
    "new_file_name", "num_vertebrae", "num_discs", "sex", "birth_date", "subset", "AngioFlag", "BodyPartExamined",
    "DeviceSerialNumber", "EchoNumbers", "EchoTime", "EchoTrainLength", "FlipAngle", "ImagedNucleus",
    "ImagingFrequency", "InPlanePhaseEncodingDirection", "MRAcquisitionType", "MagneticFieldStrength",
    "Manufacturer", "ManufacturerModelName", "NumberOfPhaseEncodingSteps", "PercentPhaseFieldOfView",
    "PercentSampling", "PhotometricInterpretation", "PixelBandwidth", "PixelSpacing", "RepetitionTime", "SAR",
    "SamplesPerPixel", "ScanningSequence", "SequenceName", "SeriesDescription", "SliceThickness",
    "SoftwareVersions", "SpacingBetweenSlices", "SpecificCharacterSet", "TransmitCoilName", "WindowCenter",
    "WindowWidth",
]  # fmt: skip

GRADINGS_HEADER = [
    "Patient", "IVD label", "Modic", "UP endplate", "LOW endplate", "Spondylolisthesis", "Disc herniation",
    "Disc narrowing", "Disc bulging", "Pfirrman grade",
]  # fmt: skip

# Fraction of discs graded "Disc narrowing" = 1 per IVD label (1 = lowest disc), SPIDER's 218 patients.
NARROWING_RATE = {1: 0.577982, 2: 0.591743, 3: 0.449541, 4: 0.362385, 5: 0.229358, 6: 0.133641}

# Marginal rates of the other binary gradings, and Modic types, over all 1,520 SPIDER rows.
BINARY_GRADING_RATE = {
    "UP endplate": 0.404,
    "LOW endplate": 0.410,
    "Spondylolisthesis": 0.028,
    "Disc herniation": 0.047,
}
MODIC_PROBS = {0: 0.662, 1: 0.003, 2: 0.330, 3: 0.005}
# Disc bulging given narrowing 0 / 1 (SPIDER: marginal 0.49, strongly linked to narrowing).
BULGING_RATE_GIVEN_NARROWING = {0: 0.299, 1: 0.835}
# Pfirrmann grade 1..5 given narrowing 0 / 1 (SPIDER's conditional frequencies).
PFIRRMANN_PROBS_GIVEN_NARROWING = {
    0: (0.272, 0.330, 0.289, 0.107, 0.002),
    1: (0.039, 0.035, 0.250, 0.342, 0.334),
}

_T1_ACQUISITIONS_CSV = """\
source_series,AngioFlag,BodyPartExamined,DeviceSerialNumber,EchoNumbers,EchoTime,EchoTrainLength,FlipAngle,ImagedNucleus,ImagingFrequency,InPlanePhaseEncodingDirection,MRAcquisitionType,MagneticFieldStrength,Manufacturer,ManufacturerModelName,NumberOfPhaseEncodingSteps,PercentPhaseFieldOfView,PercentSampling,PhotometricInterpretation,PixelBandwidth,PixelSpacing,RepetitionTime,SAR,SamplesPerPixel,ScanningSequence,SequenceName,SeriesDescription,SliceThickness,SoftwareVersions,SpacingBetweenSlices,SpecificCharacterSet,TransmitCoilName,WindowCenter,WindowWidth
1_t1,,LSPINE,,1,13.837,7,85,1H,127.771072,COL,2D,3.0,Philips Healthcare,Ingenia,235,155.555555555555,77.1704177856445,MONOCHROME2,488,"[0.625, 0.625]",716.234375,2.78812026977539,1,SE,,,3.0,"['5.6.1', '5.6.1.2']",3.3,ISO 2022 IR 100,,1093.0,1901.0
10_t1,N,LSPINE,170042.0,1,9.8,5,150,1H,123.249384,COL,2D,3.0,SIEMENS,Skyra_fit,540,100.0,75.0,MONOCHROME2,250,"[0.3125, 0.3125]",497.0,1.2854570262952,1,SE,*tse2d1_5,SAG T1 TSE,4.0,syngo MR E11,4.4,ISO_IR 100,Body,598.0,1281.0
100_t1,,MRI LWK,70714.0,1,8.0,5,80,1H,63.878856000000006,COL,2D,1.5,Philips Medical Systems,Ingenia,300,139.130443226207,90.13806915283199,MONOCHROME2,199,"[0.47826087474823, 0.47826087474823]",575.0001220703119,1.7198117971420201,1,SE,,T1_CS_TSE SAG,4.0,"['5.6.1', '5.6.1.2']",4.4,ISO_IR 100,,312.78,543.87
101_t1,N,MRI LWK,169723.0,1,9.6,3,150,1H,63.686882999999995,COL,2D,1.5,SIEMENS,Avanto_fit,408,100.0,70.0,MONOCHROME2,235,"[0.8125, 0.8125]",660.0,1.6905821916541002,1,SE,*tse2d1_3,t1_tse_sag_320,4.0,syngo MR E11,4.8,ISO_IR 100,Body,394.0,833.0
104_t1,N,LSPINE,141639.0,1,9.7,3,150,1H,63.676813,COL,2D,1.5,SIEMENS,Aera,408,100.0,70.0,MONOCHROME2,235,"[0.875, 0.875]",617.0,1.7617337396489001,1,SE,*tse2d1_3,SAG T1 TSE,4.0,syngo MR E11,4.8,ISO_IR 100,Body,334.0,747.0
106_t1,N,LSPINE,37743.0,1,11.0,4,150,1H,63.589518000000005,COL,2D,1.5,SIEMENS,SymphonyTim,488,100.0,70.0,MONOCHROME2,161,"[0.72916668653488, 0.72916668653488]",446.0,1.5678282176257,1,SE,*tse2d1_4,SAG T1 TSE,4.0,syngo MR B17,4.4,ISO_IR 100,Body,466.0,985.0
107_t1,N,,,1,9.8,2,150,1H,63.673776000000004,COL,2D,1.5,SIEMENS,Avanto_fit,512,100.0,75.0,MONOCHROME2,190,"[.5859375, .5859375]",456.0,2.1381270311365,1,SE,*tse2d1_3,t1_tse_sag,3.0,,3.3,ISO_IR 100,Body,265.0,620.0
116_t1,N,TSPINE,170042.0,1,9.7,3,150,1H,123.249443,COL,2D,3.0,SIEMENS,Skyra_fit,408,100.0,70.0,MONOCHROME2,235,"[1.0625, 1.0625]",633.0,1.9963961138106998,1,SE,*tse2d1_3,SAG T1 TSE,4.0,syngo MR E11,4.8,ISO_IR 100,Body,595.0,1247.0
132_t1,N,LSPINE,141639.0,1,9.7,3,150,1H,63.676814,COL,2D,1.5,SIEMENS,Aera,408,100.0,70.0,MONOCHROME2,235,"[1.0625, 1.0625]",618.0,1.7381682699901,1,SE,*tse2d1_3,SAG T1 TSE,4.0,syngo MR E11,4.8,ISO_IR 100,Body,373.0,825.0
142_t1,N,,,1,9.5,2,150,1H,63.673812,COL,2D,1.5,SIEMENS,Avanto_fit,448,100.0,75.0,MONOCHROME2,190,"[.390625, .390625]",456.0,1.1197473204633999,1,SE,*tse2d1_3,t1_tse_sag,3.0,,3.3,ISO_IR 100,Body,303.0,705.0
162_t1,N,,,1,7.0,3,150,1H,63.673852000000004,COL,2D,1.5,SIEMENS,Avanto_fit,450,100.0,70.0,MONOCHROME2,625,"[1, 1]",645.0,1.7509161484599,1,SE,*tseW2d1_3,t1_tse_sag_WARP,4.0,,4.8,ISO_IR 100,Body,397.0,891.0
174_t1,,LSPINE,,1,13.837,7,85,1H,127.771248,COL,2D,3.0,Philips Healthcare,Ingenia,274,177.77777777777698,77.1739120483398,MONOCHROME2,463,"[0.5, 0.5]",600.0,2.51932668685913,1,SE,,,3.0,"['5.6.1', '5.6.1.2']",3.3,ISO 2022 IR 100,,1049.0,1824.0
209_t1,N,,,1,9.5,4,160,1H,123.23529099999999,COL,2D,3.0,SIEMENS,Prisma_fit,484,100.0,70.0,MONOCHROME2,260,"[.57291668653488, .57291668653488]",450.0,0.88033420756425,1,SE,*tse2d1_4,t1_tse_sag,3.0,,3.3,ISO_IR 100,Body,763.0,1619.0
214_t1,N,MRI LWK _DECENTR,26380.0,1,11.0,3,150,1H,63.638253000000006,COL,2D,1.5,SIEMENS,Avanto,642,100.0,100.0,MONOCHROME2,161,"[0.9375, 0.9375]",627.0,1.7189817903772,1,SE,*tse2d1_3,t1_tse_sag_384,3.5,syngo MR B19,4.2,ISO_IR 100,Body,331.0,747.0
85_t1,N,LSPINE,141639.0,1,9.7,3,137,1H,63.676815000000005,COL,2D,1.5,SIEMENS,Aera,408,100.0,70.0,MONOCHROME2,235,"[0.9375, 0.9375]",617.0,1.4412545808683,1,SE,*tse2d1_3,SAG T1 TSE,4.0,syngo MR E11,4.8,ISO_IR 100,Body,398.0,838.0
"""


def t1_acquisitions() -> pd.DataFrame:
    """The embedded acquisitions as strings (written back verbatim), plus parsed ``pixel_mm``, ``slice_mm``."""
    table = pd.read_csv(io.StringIO(_T1_ACQUISITIONS_CSV), dtype=str, keep_default_na=False)
    table["pixel_mm"] = table["PixelSpacing"].map(parse_pixel_spacing)
    table["slice_mm"] = table["SliceThickness"].astype(float)
    return table


def parse_pixel_spacing(text: str) -> float:
    """SPIDER writes ``[0.625, 0.625]`` and also ``[.5859375, .5859375]``; square pixels throughout."""
    values = ast.literal_eval(text.replace("[.", "[0.").replace(", .", ", 0."))
    return float(values[0])
