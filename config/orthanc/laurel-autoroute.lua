-- Orthanc (1.10 and later): route every MR image a modality sends to the Laurel node, image by image.
-- Installed by listing this file in Orthanc's "LuaScripts". Declare the node as the modality "laurel"
-- ("DicomModalities": { "laurel": [ "LAUREL", "<node host>", 11112 ] }).
--
-- Never loops: what Laurel itself sends (its approved SEGs, calling AE title LAUREL) is stored, not routed
-- back, and only MR images are routed. Per instance because SendToModality on a study id fails in 1.10.

LAUREL_AET = 'LAUREL'

function OnStoredInstance(instanceId, tags, metadata, origin)
  if origin['RequestOrigin'] == 'DicomProtocol' and origin['RemoteAet'] == LAUREL_AET then
    return  -- a result from Laurel: keep it in the PACS, do not send it back
  end
  if tags['Modality'] == 'MR' then
    SendToModality(instanceId, 'laurel')
  end
end
